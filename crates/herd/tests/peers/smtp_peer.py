#!/usr/bin/python3
"""An SMTP server for herd's tests, built on Debian's python3-aiosmtpd.

Each message received is appended to OUT as one JSON line: envelope sender, recipients,
the message text, whether the session was under TLS and the login that authenticated.

    smtp_peer.py --listen HOST:PORT --out FILE [--starttls CERT KEY] [--auth USER PASS]

With --starttls, STARTTLS is offered and required before MAIL; with --auth, AUTH PLAIN/LOGIN
is required and only USER/PASS is accepted. Prints "ready" once it listens; stops on SIGTERM.
"""
import argparse
import json
import signal
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Record:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        rec = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "tls": session.ssl is not None,
            "login": session.auth_data if isinstance(session.auth_data, str) else None,
        }
        with open(self.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 OK stored"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", nargs=2, metavar=("USER", "PASS"))
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    kw = {}
    if a.starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(*a.starttls)
        kw.update(tls_context=ctx, require_starttls=True)
    if a.auth:
        user, password = a.auth

        def check(server, session, envelope, mechanism, data):
            ok = (
                isinstance(data, LoginPassword)
                and data.login.decode() == user
                and data.password.decode() == password
            )
            # handled=False: aiosmtpd answers a failure with 535 itself.
            return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

        kw.update(authenticator=check, auth_required=True, auth_require_tls=bool(a.starttls))
    c = Controller(Record(a.out), hostname=host, port=int(port), ready_timeout=10, **kw)
    c.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    c.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
