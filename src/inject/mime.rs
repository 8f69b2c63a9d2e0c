//! A recipient's message as MIME (RFC 2045-2047, 2231 file names, UTF-8
//! headers encoded), built with mail-builder from the rendered parts;
//! and the address syntax the API accepts. Builds bytes; never queues.

use mail_builder::MessageBuilder;
use mail_builder::headers::HeaderType;
use mail_builder::headers::address::Address;
use mail_builder::headers::text::Text;

use super::render::Rendered;

/// Headers the API sets itself and a request may not.
const OWN_HEADERS: [&str; 12] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "received",
];

/// A mailbox: display name, if any, and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name.
    pub name: Option<String>,
    /// `local@domain`.
    pub address: String,
}

/// Parses `a@b.example` or `Name <a@b.example>` (the name may be quoted).
pub fn mailbox(s: &str) -> Result<Mailbox, String> {
    let s = s.trim();
    let (name, address) = match (s.rfind('<'), s.ends_with('>')) {
        (Some(lt), true) => {
            let name = s[..lt].trim().trim_matches('"').trim();
            let name = (!name.is_empty()).then(|| name.to_owned());
            (name, &s[lt + 1..s.len() - 1])
        }
        _ => (None, s),
    };
    check_address(address)?;
    if name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err("the display name has control characters".into());
    }
    Ok(Mailbox {
        name,
        address: address.to_owned(),
    })
}

/// Checks `local@domain`: a dot-atom local part (UTF-8 allowed, RFC
/// 6531), a mail domain, 254 bytes at most.
pub fn check_address(a: &str) -> Result<(), String> {
    let Some(at) = a.rfind('@') else {
        return Err(format!("{a:?} is not an address (local@domain)"));
    };
    let (local, domain) = (&a[..at], &a[at + 1..]);
    let atext = |c: char| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    if !local_ok {
        return Err(format!("{a:?}: the local part is not a valid dot-atom"));
    }
    if !crate::config::names::is_mail_domain(domain) {
        return Err(format!("{a:?}: {domain:?} is not a valid domain"));
    }
    if a.len() > 254 {
        return Err(format!("{a:?} is longer than 254 bytes"));
    }
    Ok(())
}

/// Checks an extra header's name: a field name (RFC 5322 printable ASCII
/// but colon) that the API does not set itself.
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(format!("{name:?} is not a header field name"));
    }
    if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("{name} is set by Tern from the request's fields"));
    }
    Ok(())
}

/// What every recipient's message of a request shares.
pub struct Common<'a> {
    /// The author.
    pub from: &'a Mailbox,
    /// Reply-To.
    pub reply_to: Option<&'a Mailbox>,
    /// Files: (content type, file name, bytes).
    pub attachments: &'a [(String, String, Vec<u8>)],
    /// The Date, in seconds since the epoch.
    pub date: i64,
}

/// One recipient's message, appended to `out` (the intake's buffer,
/// after its Received header: no copy of the message).
pub fn build(c: &Common<'_>, to: &Mailbox, message_id: &str, r: &Rendered, out: &mut Vec<u8>) {
    let addr = |m: &Mailbox| Address::new_address(m.name.clone(), m.address.clone());
    let mut b = MessageBuilder::new()
        .from(addr(c.from))
        .to(addr(to))
        .message_id(message_id.to_owned())
        .date(c.date);
    if let Some(rt) = c.reply_to {
        b = b.reply_to(addr(rt));
    }
    if let Some(s) = &r.subject {
        b = b.subject(s.clone());
    }
    for (name, value) in &r.headers {
        let clean: String = value.chars().filter(|c| !c.is_control()).collect();
        b = b.header(name.clone(), HeaderType::Text(Text::new(clean)));
    }
    match (&r.text, &r.html) {
        (None, None) => b = b.text_body(""),
        (t, h) => {
            if let Some(t) = t {
                b = b.text_body(t.clone());
            }
            if let Some(h) = h {
                b = b.html_body(h.clone());
            }
        }
    }
    for (ct, name, bytes) in c.attachments {
        b = b.attachment(ct.clone(), name.clone(), bytes.as_slice());
    }
    // Writing to a Vec cannot fail.
    let _ = b.write_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes_parse_with_and_without_names() {
        assert_eq!(
            mailbox("Shop Team <shop@shop.example>").unwrap(),
            Mailbox {
                name: Some("Shop Team".into()),
                address: "shop@shop.example".into()
            }
        );
        assert_eq!(
            mailbox("\"A, B\" <a@b.example>").unwrap().name.as_deref(),
            Some("A, B")
        );
        assert!(mailbox("josé@exemple.fr").is_ok());
        for bad in [
            "nobody",
            "a@",
            "@b.example",
            "a b@c.example",
            "a..b@c.example",
            "a@-b.example",
        ] {
            assert!(mailbox(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_has_its_parts_and_encoded_headers() {
        let from = mailbox("Boutique Élan <shop@shop.example>").unwrap();
        let to = mailbox("Zoë <z@alpha.example>").unwrap();
        let files = vec![(
            "application/pdf".to_owned(),
            "facture été.pdf".to_owned(),
            b"%PDF-1.4".to_vec(),
        )];
        let c = Common {
            from: &from,
            reply_to: None,
            attachments: &files,
            date: 1_800_000_000,
        };
        let r = Rendered {
            subject: Some("Votre commande €".into()),
            text: Some("Bonjour".into()),
            html: Some("<p>Bonjour</p>".into()),
            headers: vec![("X-Campaign".into(), "noël".into())],
        };
        let mut out = b"Received: x\r\n".to_vec();
        build(&c, &to, "abc@tern.test", &r, &mut out);
        let m = String::from_utf8(out).unwrap();
        assert!(m.starts_with("Received: x\r\nFrom: "), "{m}");
        assert!(m.contains("Message-ID: <abc@tern.test>"), "{m}");
        assert!(m.contains("Subject: =?utf-8?"), "{m}");
        assert!(
            m.contains("multipart/mixed") && m.contains("multipart/alternative"),
            "{m}"
        );
        assert!(
            m.contains("filename*=") || m.contains("filename=\"=?utf-8"),
            "{m}"
        );
        assert!(m.is_ascii(), "headers and parts are encoded");
        assert!(check_header_name("Subject").is_err() && check_header_name("X-Tag").is_ok());
    }
}
