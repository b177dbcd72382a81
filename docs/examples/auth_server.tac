# Run with:  twistd -ny docs/examples/auth_server.tac
# Then, in another terminal:  python docs/examples/auth_client.py
# Not run by tests: tests/test_tls.py runs this server with auth_client.py
#
# A PB server that logs users in over TLS, with passwords stored hashed
# (PBKDF2) and with TLS client certificates, on 127.0.0.1:8788.  Stock PB
# clients cannot log in here: their MD5 challenge needs the passwords
# themselves; pbext clients send the password over TLS.
#
# On first run it writes demo material into $PBEXT_AUTH_DIR (default: a
# "pbext-auth-demo" directory in the system's temporary directory): a
# certificate authority, a certificate for localhost and 127.0.0.1, a client
# certificate for "carol", and a password file where alice's password is
# "wonderland".  Never use these outside a demonstration.
#
# Environment (all optional):
#   PBEXT_AUTH_DIR  where the demo material lives
#   PBEXT_PORT      the TLS port (default 8788; the tests use 0)
import datetime
import hashlib
import ipaddress
import os
import tempfile

from twisted.application import service
from twisted.cred.checkers import FilePasswordDB
from twisted.cred.portal import Portal
from twisted.internet import reactor

from pbext.demo import DemoRealm
from pbext.login import ClientCertificateChecker, askForClientCertificates
from pbext.login import loadAuthorities
from pbext import PBServerFactory, PBServerService

directory = os.environ.get(
    "PBEXT_AUTH_DIR", os.path.join(tempfile.gettempdir(), "pbext-auth-demo")
)
port = os.environ.get("PBEXT_PORT", "8788")


def hashPassword(username, password, stored):
    """
    FilePasswordDB's hash function: hash the password sent over TLS the way
    the stored one was (pbkdf2$ITERATIONS$SALT$HASH) so the two compare.
    """
    try:
        kind, iterations, salt, _ = stored.split(b"$")
    except ValueError:
        return None
    digest = hashlib.pbkdf2_hmac(
        "sha256", password, bytes.fromhex(salt.decode()), int(iterations)
    )
    return b"$".join([kind, iterations, salt, digest.hex().encode()])


def makeDemoFiles(directory):
    """
    Write a demo CA, server and client certificates and a password file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(os.path.join(directory, "roots"), mode=0o700, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(key, name, issuerKey, issuer, authority=False, sans=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
            )
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=authority, path_length=None), True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        return builder.sign(issuerKey, hashes.SHA256())

    def write(name, *items):
        data = b""
        for item in items:
            if isinstance(item, bytes):
                data += item
            elif isinstance(item, x509.Certificate):
                data += item.public_bytes(serialization.Encoding.PEM)
            else:
                data += item.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)

    caKey = ec.generate_private_key(ec.SECP256R1())
    write("roots/ca.pem", certificate(caKey, "demo CA", caKey, "demo CA", True))
    serverKey = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    write("server.key", serverKey)
    write(
        "server.pem",
        certificate(serverKey, "localhost", caKey, "demo CA", sans=names),
    )
    carolKey = ec.generate_private_key(ec.SECP256R1())
    write("carol.key", carolKey)
    write("carol.pem", certificate(carolKey, "carol", caKey, "demo CA"))
    salt = os.urandom(16).hex().encode()
    stored = hashPassword(b"alice", b"wonderland", b"pbkdf2$200000$" + salt + b"$")
    write("passwords", b"alice:" + stored + b"\n")


if not os.path.exists(os.path.join(directory, "passwords")):
    makeDemoFiles(directory)


def path(name):
    return os.path.join(directory, name)


# Two checkers: hashed passwords (IUsernamePassword: the plaintext login,
# over TLS) and verified client certificates (the commonName is the user).
portal = Portal(
    DemoRealm(),
    [FilePasswordDB(path("passwords"), hash=hashPassword), ClientCertificateChecker()],
)
factory = PBServerFactory(portal)

# ssl: listeners of this reactor ask clients for a certificate (optional)
# and verify it against the demo CA, which is what --tls-client-ca does.
authorities = loadAuthorities(path("roots/ca.pem"))
listenReactor = askForClientCertificates(reactor, authorities)
listen = (
    f"ssl:{port}:interface=127.0.0.1:privateKey={path('server.key')}"
    f":certKey={path('server.pem')}"
)

application = service.Application("pbext auth demo")
server = PBServerService(factory, [listen], reactor=listenReactor)
server.setServiceParent(application)
