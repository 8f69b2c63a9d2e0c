"""Verifies every DKIM-Signature of each message file with dkimpy, an
implementation independent of Tern's (mail-auth). Public keys come from
the test's DNS server, asked with dnspython.

usage: dkim_verify.py DNS_IP DNS_PORT FILE...
prints one JSON object per file: {"file": F, "signatures": N, "results": [bool, ...]}
"""

import json
import logging
import sys

import dkim
import dns.resolver


def main():
    ip, port, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [ip]
    res.port = port

    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            answer = res.resolve(name, "TXT", lifetime=timeout)
        except Exception:
            return None
        for rr in answer:
            return b"".join(rr.strings)
        return None

    logger = logging.getLogger("dkim")
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    for path in files:
        with open(path, "rb") as f:
            msg = f.read()
        headers, _ = dkim.rfc822_parse(msg)
        count = sum(1 for name, _ in headers if name.lower() == b"dkim-signature")
        results = []
        for i in range(count):
            d = dkim.DKIM(msg, logger=logger)
            try:
                results.append(bool(d.verify(idx=i, dnsfunc=txt)))
            except dkim.DKIMException as e:
                print(f"{path} signature {i}: {e}", file=sys.stderr)
                results.append(False)
        print(json.dumps({"file": path, "signatures": count, "results": results}))


if __name__ == "__main__":
    main()
