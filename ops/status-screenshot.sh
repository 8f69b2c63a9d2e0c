#!/bin/sh
# Takes the README's screenshot of the status page in headless Chromium
# (Debian's `chromium` package): starts a release build of tern with a
# throwaway spool whose DNS does not answer (so mail stays queued), queues
# some mail with Python's smtplib, suspends a domain, and captures
# http://127.0.0.1:18025/status into docs/status.png. Run from the repo root.
set -eu
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
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
[admin]
address = "127.0.0.1:18025"
EOT
./target/release/tern run --config "$dir/tern.toml" 2>"$dir/stderr" &
pid=$!
sleep 1
python3 - <<'EOT'
import smtplib
s = smtplib.SMTP("127.0.0.1", 12525)
for i, d in enumerate(["gmail.com"] * 6 + ["yahoo.com"] * 4 + ["outlook.com"] * 3 + ["shop.example"] * 2):
    s.sendmail("news@shop.example", [f"user{i}@{d}", f"other{i}@{d}"], b"Subject: hello\r\n\r\nhi\r\n")
s.quit()
EOT
./target/release/tern suspend --domain yahoo.com --for 30m --reason "complaint spike" --config "$dir/tern.toml"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$dir/chrome" --window-size=1000,900 \
  --screenshot=docs/status.png http://127.0.0.1:18025/status 2>/dev/null
echo "wrote docs/status.png"
