#!/bin/sh
# Takes the README's screenshot of the status page in headless Chromium
# (Debian's `chromium` package): starts a release build of tern with a
# throwaway spool whose DNS does not answer (so mail stays queued) except
# for two domains routed to a slow local receiver (so the paths have mail
# waiting and sending) and one to a relay of its own, queues some mail with
# Python's smtplib, suspends that third domain (its mail waits in its
# scheduled queue), rebinds another's mail, holds the waiting mail of a
# fourth, and captures
# http://127.0.0.1:18025/status into docs/status.png. Run from the repo root.
set -eu
dir=$(mktemp -d)
pid= sink=
trap 'kill $pid $sink 2>/dev/null || true; rm -rf "$dir"' EXIT
cargo build --release --quiet
cat > "$dir/tern.toml" <<EOT
[server]
hostname = "mta.example.net"
[log]
level = "warn"
deliveries = "$dir/deliveries.jsonl"
[[listener]]
address = "127.0.0.1:12525"
[queue]
path = "$dir/spool"
min_free_space = "0B"
[dns]
nameservers = ["127.0.0.1:1"]
attempts = 1
timeout = "1s"
prohibited_targets = ["0.0.0.0/8"]
[delivery]
connection_limit = 2
[[source]]
name = "ip-1"
address = "127.0.0.1"
[[source]]
name = "ip-2"
address = "127.0.0.2"
[[pool]]
name = "default"
sources = [{ source = "ip-1", weight = 1 }, { source = "ip-2", weight = 1 }]
[[pool]]
name = "spare"
sources = [{ source = "ip-2", weight = 1 }]
[[route]]
domain = "gmail.com"
smarthost = ["127.0.0.1:12526"]
[[route]]
domain = "outlook.com"
smarthost = ["127.0.0.1:12526"]
[[route]]
domain = "yahoo.com"
smarthost = ["127.0.0.1:12527"]
[admin]
address = "127.0.0.1:18025"
EOT
# A receiver that takes a second per message.
python3 - <<'EOT' &
import asyncio
async def session(r, w):
    w.write(b"220 slow.example ESMTP\r\n")
    while line := await r.readline():
        cmd = line[:4].upper()
        if cmd == b"DATA":
            w.write(b"354 go on\r\n")
            while (await r.readline()) not in (b".\r\n", b""):
                pass
            await asyncio.sleep(1)
            w.write(b"250 2.0.0 ok\r\n")
        elif cmd == b"QUIT":
            w.write(b"221 2.0.0 bye\r\n"); await w.drain(); break
        elif cmd == b"EHLO":
            w.write(b"250-slow.example\r\n250 PIPELINING\r\n")
        else:
            w.write(b"250 2.0.0 ok\r\n")
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(session, "127.0.0.1", 12526)
    await asyncio.sleep(120)
asyncio.run(main())
EOT
sink=$!
./target/release/tern run --config "$dir/tern.toml" 2>"$dir/stderr" &
pid=$!
sleep 1
./target/release/tern suspend --domain yahoo.com --for 30m --reason "complaint spike" --config "$dir/tern.toml"
python3 - <<'EOT'
import smtplib
s = smtplib.SMTP("127.0.0.1", 12525)
for i, d in enumerate(["gmail.com"] * 40 + ["yahoo.com"] * 4 + ["outlook.com"] * 20 + ["shop.example"] * 2):
    s.sendmail("news@shop.example", [f"user{i}@{d}", f"other{i}@{d}"], b"Subject: hello\r\n\r\nhi\r\n")
s.quit()
EOT
./target/release/tern rebind --domain shop.example --to-pool spare --reason "ip-1 listed" --config "$dir/tern.toml"
./target/release/tern hold --domain outlook.com --config "$dir/tern.toml"
sleep 25
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$dir/chrome" --window-size=1000,1250 \
  --screenshot=docs/status.png http://127.0.0.1:18025/status 2>/dev/null
echo "wrote docs/status.png"
