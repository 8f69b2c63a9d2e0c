//! A minimal SMTP sink for trying Tern out: it accepts every message and
//! prints one line per message (sender, recipients, size, Subject).
//!
//! ```sh
//! cargo run --example sink -- 127.0.0.1:2526
//! ```
//!
//! It is a demonstration tool, not a mail server: it keeps nothing.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest message kept in memory while reading it.
const MAX_MESSAGE: usize = 50 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:2526".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("sink: listening on {}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = session(stream, peer).await {
                println!("sink: {peer}: {e}");
            }
        });
    }
}

async fn session(stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.example ESMTP demo sink\r\n").await?;
    let (mut from, mut rcpts) = (String::new(), Vec::<String>::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end();
        let upper = cmd.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") {
            "250-sink.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800"
        } else if upper.starts_with("HELO") || upper == "NOOP" {
            "250 ok"
        } else if upper == "RSET" {
            from.clear();
            rcpts.clear();
            "250 ok"
        } else if upper.starts_with("MAIL FROM:") {
            (from, rcpts) = (address(&cmd[10..]), Vec::new());
            "250 2.1.0 ok"
        } else if upper.starts_with("RCPT TO:") {
            rcpts.push(address(&cmd[8..]));
            "250 2.1.5 ok"
        } else if upper == "DATA" {
            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let data = read_data(&mut r).await?;
            let subject = data
                .split(|b| *b == b'\n')
                .take_while(|l| l.len() > 1)
                .find(|l| l.len() > 8 && l[..8].eq_ignore_ascii_case(b"subject:"))
                .map(|l| String::from_utf8_lossy(&l[8..]).trim().to_owned())
                .unwrap_or_default();
            let to = rcpts.join(" ");
            println!(
                "sink: {peer}: message from {from} to {to}, {} bytes, subject {subject:?}",
                data.len()
            );
            "250 2.0.0 accepted by the demo sink"
        } else if upper == "QUIT" {
            w.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.1 not implemented"
        };
        w.write_all(format!("{reply}\r\n").as_bytes()).await?;
    }
}

/// The `<address>` of a MAIL or RCPT argument, without its parameters.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    arg.find('>').map_or(arg, |end| &arg[..=end]).to_owned()
}

/// Reads message data up to CRLF.CRLF (the data keeps its dot-stuffing).
async fn read_data(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 || line == b".\r\n" {
            return Ok(data);
        }
        if data.len() < MAX_MESSAGE {
            data.extend_from_slice(&line);
        }
    }
}
