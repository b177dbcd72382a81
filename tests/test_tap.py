"""
Tests for L{pbext.tap}: parsing C{twistd pbserver}'s command line and
building its service.
"""

from __future__ import annotations

from io import StringIO

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IServiceMaker
from twisted.cred import strcred
from twisted.cred.checkers import (
    ICredentialsChecker,
    InMemoryUsernamePasswordDatabaseDontUse,
)
from twisted.cred.credentials import (
    IAnonymous,
    ISSHPrivateKey,
    IUsernameHashedPassword,
)
from twisted.cred.portal import Portal
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.spread import pb
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from pbext import demo, login, server, tap


def makeCertificates(test: SynchronousTestCase) -> object:
    """
    Certificates for C{ssl:} listeners, made by L{tests.test_tls}.
    """
    try:
        from tests.test_tls import Certificates
    except ImportError as e:  # pragma: no cover
        raise test.skipException(f"no TLS support: {e}")
    return Certificates(FilePath(test.mktemp()))


class CustomRoot(pb.Root):
    """
    A root for C{--root} tests.
    """


customRoot = CustomRoot()


def makeCustomRoot() -> CustomRoot:
    """
    A zero-argument callable returning a root.
    """
    return customRoot


class CustomRealm(demo.DemoRealm):
    """
    A realm for C{--realm} tests.
    """


notARoot = object()


def brokenFactory() -> object:
    raise RuntimeError("boom")


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}.
    """

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def assertUsageError(self, *argv: str) -> str:
        error = self.assertRaises(usage.UsageError, self.parse, *argv)
        return str(error)

    def test_defaults(self) -> None:
        """
        With no options, pbserver listens on PB's traditional port 8787 and
        serves the demo root without login.
        """
        options = self.parse()
        self.assertEqual(options["listen"], ["tcp:8787"])
        self.assertIsNone(options["rootObject"])
        self.assertIsNone(options["realmObject"])
        self.assertFalse(options["unsafe-tracebacks"])

    def test_listenRepeatable(self) -> None:
        """
        C{--listen} may be given several times; each endpoint is kept in order
        and the default is then not added.
        """
        options = self.parse("--listen", "tcp:1234", "--listen", "unix:/tmp/pb.sock")
        self.assertEqual(options["listen"], ["tcp:1234", "unix:/tmp/pb.sock"])

    def test_listenInvalid(self) -> None:
        """
        An endpoint description of an unknown type is a usage error naming it.
        """
        message = self.assertUsageError("--listen", "bogus:1234")
        self.assertIn("bogus:1234", message)

    def test_rootDottedName(self) -> None:
        """
        C{--root} accepts the dotted name of a L{pb.IPBRoot} provider.
        """
        options = self.parse("--root", "tests.test_tap.customRoot")
        self.assertIs(options["rootObject"], customRoot)

    def test_rootCallable(self) -> None:
        """
        C{--root} accepts a zero-argument callable (or class) returning a root.
        """
        options = self.parse("--root", "tests.test_tap.makeCustomRoot")
        self.assertIs(options["rootObject"], customRoot)
        options = self.parse("--root", "tests.test_tap.CustomRoot")
        self.assertIsInstance(options["rootObject"], CustomRoot)

    def test_rootUnknown(self) -> None:
        """
        An unimportable C{--root} is a usage error, not a traceback.
        """
        message = self.assertUsageError("--root", "tests.test_tap.noSuchThing")
        self.assertIn("tests.test_tap.noSuchThing", message)
        self.assertIn("cannot import", message)

    def test_rootWrongKind(self) -> None:
        """
        A C{--root} that is not a PB root is a usage error saying what is
        wanted.
        """
        message = self.assertUsageError("--root", "tests.test_tap.notARoot")
        self.assertIn("pb.IPBRoot", message)

    def test_rootCallableFails(self) -> None:
        """
        A C{--root} callable that raises is a usage error carrying the error.
        """
        message = self.assertUsageError("--root", "tests.test_tap.brokenFactory")
        self.assertIn("boom", message)

    def test_realmWithAuth(self) -> None:
        """
        C{--realm} with C{--auth} loads the realm (calling a class).
        """
        options = self.parse(
            "--realm", "tests.test_tap.CustomRealm", "--auth", "memory:alice:secret"
        )
        self.assertIsInstance(options["realmObject"], CustomRealm)

    def test_realmWithoutAuth(self) -> None:
        """
        C{--realm} without any C{--auth} is a usage error.
        """
        message = self.assertUsageError("--realm", "tests.test_tap.CustomRealm")
        self.assertIn("--auth", message)

    def test_realmWrongKind(self) -> None:
        """
        A C{--realm} that is not an C{IRealm} is a usage error.
        """
        message = self.assertUsageError(
            "--realm", "tests.test_tap.customRoot", "--auth", "memory:a:b"
        )
        self.assertIn("IRealm", message)

    def test_rootAndRealm(self) -> None:
        """
        C{--root} and C{--realm} together are a usage error.
        """
        self.assertUsageError(
            "--root",
            "tests.test_tap.customRoot",
            "--realm",
            "tests.test_tap.CustomRealm",
            "--auth",
            "memory:a:b",
        )

    def test_rootAndAuth(self) -> None:
        """
        C{--auth} with a C{--root} is a usage error: a root has no login.
        """
        self.assertUsageError(
            "--root", "tests.test_tap.customRoot", "--auth", "memory:a:b"
        )

    def test_authUnix(self) -> None:
        """
        C{--auth unix}, a checker that only verifies plaintext passwords, is
        refused on listeners without TLS, saying how to fix it: no login can
        serve it there (pbext clients send passwords only over TLS, stock
        clients never).
        """
        message = self.assertUsageError("--auth", "unix")
        self.assertIn("plaintext", message)
        self.assertIn("--listen ssl:", message)
        self.assertIn("--allow-plaintext-login", message)

    def test_authUnixOverTLS(self) -> None:
        """
        With a C{ssl:} listener, C{--auth unix} is accepted, with a note that
        only pbext clients over TLS can log in.
        """
        certificates = makeCertificates(self)
        options = self.parse(
            "--listen",
            certificates.serverDescription(),
            "--listen",
            "tcp:0",
            "--auth",
            "unix",
        )
        (note,) = options["authNotes"]
        self.assertIn("only pbext clients connecting over TLS", note)
        self.assertIn("stock PB clients cannot", note)

    def test_authUnixAllowPlaintext(self) -> None:
        """
        With C{--allow-plaintext-login}, C{--auth unix} is accepted without
        TLS, with a note saying the client must opt in too.
        """
        options = self.parse("--auth", "unix", "--allow-plaintext-login")
        (note,) = options["authNotes"]
        self.assertIn("allowPlaintextLogin=True", note)
        self.assertIn("stock PB clients cannot", note)

    def test_authNoNotes(self) -> None:
        """
        A checker every client can use (C{memory:}) gets no note.
        """
        self.assertEqual(self.parse("--auth", "memory:a:b")["authNotes"], [])

    def test_authUnusable(self) -> None:
        """
        A checker no PB login can serve (here one for SSH keys) is refused
        at parse time.
        """

        @implementer(ICredentialsChecker)
        class KeyChecker:
            credentialInterfaces = (ISSHPrivateKey,)

        self.patch(strcred, "makeChecker", lambda description: KeyChecker())
        message = self.assertUsageError("--auth", "sshkeys")
        self.assertIn("ISSHPrivateKey", message)

    def test_noClassicLogin(self) -> None:
        """
        C{--no-classic-login} is a flag; with it, password checkers get a
        note that stock clients cannot log in.
        """
        options = self.parse("--auth", "memory:a:b", "--no-classic-login")
        self.assertTrue(options["no-classic-login"])
        (note,) = options["authNotes"]
        self.assertIn("stock PB clients cannot", note)

    def test_loginThrottle(self) -> None:
        """
        C{--login-throttle} takes L{LoginThrottle} settings, or C{off}.
        """
        options = self.parse("--login-throttle", "freeFailures=1, maxDelay=5")
        self.assertEqual(
            options["loginThrottleSettings"], {"freeFailures": 1, "maxDelay": 5.0}
        )
        options = self.parse("--login-throttle", "refuseAfter=0")
        self.assertEqual(options["loginThrottleSettings"], {"refuseAfter": None})
        options = self.parse(
            "--login-throttle",
            "addressFreeFailures=5,addressRefuseAfter=0,maxAttemptsPerSecond=2,"
            "maxUsernameDelay=3,trustFor=60",
        )
        self.assertEqual(
            options["loginThrottleSettings"],
            {
                "addressFreeFailures": 5,
                "addressRefuseAfter": None,
                "maxAttemptsPerSecond": 2.0,
                "maxUsernameDelay": 3.0,
                "trustFor": 60.0,
            },
        )
        self.assertIsNone(
            self.parse("--login-throttle", "off")["loginThrottleSettings"]
        )

    def test_loginThrottleInvalid(self) -> None:
        """
        Unknown settings, bad values and settings that make no sense are
        usage errors.
        """
        for spec in (
            "bogus=1",
            "maxDelay=x",
            "initialDelay=9,maxDelay=1",
            "maxAttemptsPerSecond=0",
        ):
            message = self.assertUsageError("--login-throttle", spec)
            self.assertIn("--login-throttle", message)

    def test_loginThrottleMessages(self) -> None:
        """
        A bad C{--login-throttle} names the setting as given and the one
        thing to write instead.
        """
        self.assertEqual(
            self.assertUsageError("--login-throttle", "bogus=1"),
            "--login-throttle bogus=1: unknown setting 'bogus=1'; give 'off' "
            "or settings such as freeFailures=3,initialDelay=1,maxDelay=30,"
            "refuseAfter=20,refuseFor=900",
        )
        self.assertEqual(
            self.assertUsageError("--login-throttle", "maxDelay=x"),
            "--login-throttle maxDelay=x: maxDelay=x: not a number; give "
            "maxDelay=NUMBER",
        )
        self.assertEqual(
            self.assertUsageError("--login-throttle", "refuseAfter=y"),
            "--login-throttle refuseAfter=y: refuseAfter=y: not a whole "
            "number; give refuseAfter=NUMBER",
        )
        self.assertEqual(
            self.assertUsageError("--login-throttle", "initialDelay=9,maxDelay=1"),
            "--login-throttle initialDelay=9,maxDelay=1: initialDelay=9.0, "
            "maxDelay=1.0: the first delay must be 0 seconds or more and no "
            "longer than the longest; raise maxDelay or lower initialDelay",
        )

    def test_tlsClientCA(self) -> None:
        """
        C{--tls-client-ca} loads the authorities and adds a checker of
        client certificates, so the demo realm is served.
        """
        certificates = makeCertificates(self)
        options = self.parse(
            "--listen",
            certificates.serverDescription(),
            "--tls-client-ca",
            certificates.ca,
        )
        self.assertEqual(len(options["clientAuthorities"]), 1)
        self.assertIn(login.IClientCertificate, options["credInterfaces"])

    def test_tlsClientCANeedsTLS(self) -> None:
        """
        C{--tls-client-ca} without an C{ssl:} listener is a usage error; so
        is a file with no certificate.
        """
        certificates = makeCertificates(self)
        message = self.assertUsageError("--tls-client-ca", certificates.ca)
        self.assertIn("--listen ssl:", message)
        message = self.assertUsageError("--tls-client-ca", certificates.serverKey)
        self.assertIn("no PEM certificate", message)
        self.assertEqual(
            message,
            f"--tls-client-ca {certificates.serverKey}: no PEM certificate in "
            f"it; give a file holding -----BEGIN CERTIFICATE----- blocks",
        )

    def test_authUnknown(self) -> None:
        """
        An unknown checker type is a usage error pointing at C{--help-auth}.
        """
        message = self.assertUsageError("--auth", "nosuchchecker:x")
        self.assertIn("--help-auth", message)

    def test_authMemoryBytes(self) -> None:
        """
        The C{memory:} checker's users are re-keyed as bytes, which is what
        PB's login looks up.
        """
        options = self.parse("--auth", "memory:alice:secret")
        (checker,) = options["credCheckers"]
        self.assertEqual(checker.users, {b"alice": b"secret"})

    def test_authAnonymous(self) -> None:
        """
        C{--auth anonymous} is accepted: PB has an anonymous login.
        """
        options = self.parse("--auth", "anonymous")
        self.assertIn(IAnonymous, options["credInterfaces"])

    def test_helpAuthListsUsable(self) -> None:
        """
        C{--help-auth} lists the checkers some login can serve: C{memory}
        for every client, and C{unix} for pbext clients sending the
        password.
        """
        options = tap.Options()
        options.authOutput = StringIO()
        self.assertRaises(SystemExit, options.parseOptions, ["--help-auth"])
        output = options.authOutput.getvalue()
        self.assertIn("memory", output)
        self.assertIn("unix", output)

    def test_unsafeTracebacks(self) -> None:
        """
        C{--unsafe-tracebacks} sets the flag.
        """
        self.assertTrue(self.parse("--unsafe-tracebacks")["unsafe-tracebacks"])

    def test_helpDocumentsEveryOption(self) -> None:
        """
        C{--help} documents every option pbserver has.
        """
        text = str(tap.Options())
        for option in (
            "--listen",
            "--root",
            "--realm",
            "--auth",
            "--help-auth",
            "--unsafe-tracebacks",
            "--allow-plaintext-login",
            "--no-classic-login",
            "--login-throttle",
            "--tls-client-ca",
        ):
            self.assertIn(option, text)


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{tap.makeService}.
    """

    def makeService(self, *argv: str) -> server.PBServerService:
        options = tap.Options()
        options.parseOptions(list(argv))
        return tap.makeService(options)

    def test_oneChildPerListen(self) -> None:
        """
        The service has one listening child per C{--listen}, each serving the
        same pbext factory.
        """
        svc = self.makeService("--listen", "tcp:0", "--listen", "tcp:1")
        children = list(svc)
        self.assertEqual(len(children), 2)
        for child in children:
            self.assertIsInstance(child, StreamServerEndpointService)
            self.assertIs(child.factory, svc.factory)
        self.assertIsInstance(svc.factory, server.PBServerFactory)

    def test_demoRoot(self) -> None:
        """
        With no root and no realm, the demo root is served.
        """
        svc = self.makeService()
        self.assertIsInstance(svc.factory.root, demo.DemoRoot)

    def test_demoRealm(self) -> None:
        """
        With C{--auth} and no realm, a portal on the demo realm is served.
        """
        svc = self.makeService("--auth", "memory:alice:secret")
        portal = svc.factory.root.portal
        self.assertIsInstance(portal, Portal)
        self.assertIsInstance(portal.realm, demo.DemoRealm)
        self.assertIn(IUsernameHashedPassword, portal.checkers)

    def test_customRoot(self) -> None:
        """
        C{--root} is served as the root object.
        """
        svc = self.makeService("--root", "tests.test_tap.customRoot")
        self.assertIs(svc.factory.root, customRoot)

    def test_unsafeTracebacks(self) -> None:
        """
        C{--unsafe-tracebacks} reaches the factory.
        """
        svc = self.makeService("--unsafe-tracebacks")
        self.assertTrue(svc.factory.unsafeTracebacks)

    def test_loginDefaults(self) -> None:
        """
        By default the portal serves the classic login, refuses plaintext
        passwords without TLS and throttles failed logins with the
        documented defaults.
        """
        root = self.makeService("--auth", "memory:a:b").factory.root
        self.assertTrue(root.classicLogin)
        self.assertFalse(root.allowPlaintextLogin)
        self.assertEqual(root.loginThrottle.freeFailures, 3)
        self.assertEqual(root.loginThrottle.maxDelay, 30.0)

    def test_loginOptions(self) -> None:
        """
        C{--no-classic-login}, C{--allow-plaintext-login} and
        C{--login-throttle} reach the portal's login objects.
        """
        root = self.makeService(
            "--auth",
            "memory:a:b",
            "--no-classic-login",
            "--allow-plaintext-login",
            "--login-throttle",
            "freeFailures=5,refuseFor=60",
        ).factory.root
        self.assertFalse(root.classicLogin)
        self.assertTrue(root.allowPlaintextLogin)
        self.assertEqual(
            (root.loginThrottle.freeFailures, root.loginThrottle.refuseFor), (5, 60.0)
        )
        root = self.makeService(
            "--auth", "memory:a:b", "--login-throttle", "off"
        ).factory.root
        self.assertIsNone(root.loginThrottle)
        root = self.makeService(
            "--auth",
            "memory:a:b",
            "--login-throttle",
            "addressRefuseAfter=500,maxAttemptsPerSecond=2,trustFor=60",
        ).factory.root
        throttle = root.loginThrottle
        self.assertEqual(
            (
                throttle.addressRefuseAfter,
                throttle.maxAttemptsPerSecond,
                throttle.trustFor,
            ),
            (500, 2.0, 60.0),
        )

    def test_admissionLimits(self) -> None:
        """
        C{--limit} sets the connection admission limits, and with C{--auth}
        the factory gives connections a login deadline; without, it serves a
        root with none.
        """
        factory = self.makeService(
            "--auth",
            "memory:a:b",
            "--limit",
            "maxConnectionsPerPrefix=8",
            "--limit",
            "loginTimeout=15",
        ).factory
        limits = factory.pbextPolicy.limits
        self.assertEqual(
            (limits.maxConnectionsPerPrefix, limits.loginTimeout), (8, 15.0)
        )
        self.assertTrue(factory.pbextAdmission.loginRequired)
        factory = self.makeService("--limit", "loginTimeout=off").factory
        self.assertIsNone(factory.pbextPolicy.limits.loginTimeout)
        self.assertFalse(factory.pbextAdmission.loginRequired)

    def test_authNotesLogged(self) -> None:
        """
        The notes about which clients can use each checker are logged when
        the service is made.
        """
        with capturedLogs() as events:
            self.makeService("--auth", "unix", "--allow-plaintext-login")
        (event,) = [e for e in events if e.get("pbextEvent") == "authNote"]
        self.assertIn("--auth unix", event["note"])

    def test_listensWhenStarted(self) -> None:
        """
        Starting the service listens on each endpoint with the reactor given.
        """
        reactor = MemoryReactor()
        factory = server.buildServerFactory(root=demo.DemoRoot())
        svc = server.PBServerService(
            factory, ["tcp:8787:interface=127.0.0.1", "tcp:9999"], reactor=reactor
        )
        svc.startService()
        self.addCleanup(svc.stopService)
        ports = [(port, f, interface) for port, f, _, interface in reactor.tcpServers]
        self.assertEqual(ports, [(8787, factory, "127.0.0.1"), (9999, factory, "")])

    def test_buildServerFactoryMistakes(self) -> None:
        """
        L{server.buildServerFactory} refuses a root with checkers and a realm
        without them, naming the arguments given and the one to give.
        """
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        error = self.assertRaises(
            ValueError, server.buildServerFactory, root=pb.Root(), checkers=[checker]
        )
        self.assertEqual(
            str(error),
            "buildServerFactory(root=..., checkers=...): a root is served "
            "without a login, so checkers have nothing to log in to; give "
            "realm= instead of root=",
        )
        error = self.assertRaises(ValueError, server.buildServerFactory, realm=object())
        self.assertEqual(
            str(error),
            "buildServerFactory(realm=...): a realm is served behind a login, "
            "which needs a credentials checker; give checkers=[...]",
        )

    def test_buildServerFactoryNeedsSomethingToServe(self) -> None:
        """
        L{server.buildServerFactory} serves no demo of its own (the demo
        depends on the server, not the reverse): given no root, or checkers
        without a realm, it names what to give, and the demo's class.
        """
        error = self.assertRaises(ValueError, server.buildServerFactory)
        self.assertEqual(
            str(error),
            "buildServerFactory(): nothing to serve; give root=YourRoot() "
            "(pbext.demo.DemoRoot() is the demo twistd pbserver serves)",
        )
        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        error = self.assertRaises(
            ValueError, server.buildServerFactory, checkers=[checker]
        )
        self.assertEqual(
            str(error),
            "buildServerFactory(checkers=...): logins need a realm to hand "
            "out avatars; give realm=YourRealm() (pbext.demo.DemoRealm() "
            "is the demo twistd pbserver serves)",
        )


class PluginTests(SynchronousTestCase):
    """
    Tests for the C{twistd} dropin.
    """

    def test_pluginFound(self) -> None:
        """
        twistd's plugin discovery finds C{pbserver}, pointing at
        L{pbext.tap}.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("pbserver", makers)
        self.assertEqual(makers["pbserver"].module, "pbext.tap")
        self.assertIs(makers["pbserver"].options, tap.Options)


def makeRegistry() -> object:
    """
    A zero-argument callable returning a registry, for C{--registry}.
    """
    from pbext.copyable import CopyableRegistry

    return CopyableRegistry()


class PolicyOptionsTests(SynchronousTestCase):
    """
    C{--policy}, C{--limit}, C{--registry} and the lifecycle options.
    """

    def parse(self, *argv: str) -> tap.Options:
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_defaultPolicy(self) -> None:
        """
        Without C{--policy}, the C{default} preset is served.
        """
        svc = tap.makeService(self.parse())
        self.assertEqual(svc.factory.pbextPolicy.name, "default")

    def test_policyPreset(self) -> None:
        """
        C{--policy strict} serves the strict preset.
        """
        svc = tap.makeService(self.parse("--policy", "strict"))
        self.assertEqual(svc.factory.pbextPolicy.name, "strict")

    def test_policyFile(self) -> None:
        """
        C{--policy FILE} loads a policy file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("[policy]\nbase = default\nname = mine\n[limits]\nmaxDepth = 40\n")
        policy = self.parse("--policy", path)["policyObject"]
        self.assertEqual((policy.name, policy.limits.maxDepth), ("mine", 40))

    def test_policyUnknown(self) -> None:
        """
        An unknown C{--policy} is a usage error naming the presets.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "--policy", "nosuch")
        self.assertIn("strict", str(error))

    def test_limit(self) -> None:
        """
        C{--limit NAME=VALUE} changes one limit of the chosen policy.
        """
        options = self.parse(
            "--policy",
            "strict",
            "--limit",
            "maxOutstandingCalls=7",
            "--limit",
            "idleTimeout=off",
        )
        limits = options["policyObject"].limits
        self.assertEqual((limits.maxOutstandingCalls, limits.idleTimeout), (7, None))

    def test_limitBad(self) -> None:
        """
        An unknown limit name or a bad value is a usage error.
        """
        self.assertRaises(usage.UsageError, self.parse, "--limit", "noSuchLimit=1")
        self.assertRaises(usage.UsageError, self.parse, "--limit", "maxDepth=deep")
        self.assertRaises(usage.UsageError, self.parse, "--limit", "maxDepth=0")

    def test_helpPolicies(self) -> None:
        """
        C{--help-policies} lists the presets and exits.
        """
        options = tap.Options()
        options.authOutput = StringIO()
        self.assertRaises(SystemExit, options.parseOptions, ["--help-policies"])
        output = options.authOutput.getvalue()
        for name in ("classic", "default", "strict"):
            self.assertIn(name, output)

    def test_registry(self) -> None:
        """
        C{--registry} (repeatable) loads registries that reach the factory.
        """
        svc = tap.makeService(
            self.parse(
                "--registry",
                "tests.test_tap.makeRegistry",
                "--registry",
                "tests.test_tap.makeRegistry",
            )
        )
        self.assertEqual(len(svc.factory.pbextRegistries), 2)

    def test_registryWrongKind(self) -> None:
        """
        A C{--registry} that is not a copyable registry is a usage error.
        """
        error = self.assertRaises(
            usage.UsageError, self.parse, "--registry", "tests.test_tap.customRoot"
        )
        self.assertIn("registry", str(error))
        self.assertTrue(
            str(error).endswith(
                "is not a copyable registry (pbext.copyable.CopyableRegistry); "
                "name one, or a zero-argument callable returning one."
            ),
            str(error),
        )
        self.assertTrue(
            str(error).startswith("--registry tests.test_tap.customRoot: "),
            str(error),
        )

    def test_lifecycleOptions(self) -> None:
        """
        C{--keepalive}, C{--keepalive-timeout} and C{--call-timeout} reach the
        brokers the factory builds; non-positive values are refused.
        """
        svc = tap.makeService(
            self.parse(
                "--keepalive", "60", "--keepalive-timeout", "5", "--call-timeout", "9"
            )
        )
        self.assertEqual(
            svc.factory._pbext.brokerOptions,
            {
                "keepaliveInterval": 60.0,
                "keepaliveTimeout": 5.0,
                "callTimeout": 9.0,
                "typedCalls": False,
            },
        )
        self.assertRaises(usage.UsageError, self.parse, "--keepalive", "0")

    def test_typedCalls(self) -> None:
        """
        C{--typed-calls} turns on the call checks of every broker the
        factory builds; they are off without it.
        """
        svc = tap.makeService(self.parse("--typed-calls"))
        self.assertTrue(svc.factory.buildProtocol(None).typedCalls)
        svc = tap.makeService(self.parse())
        self.assertFalse(svc.factory.buildProtocol(None).typedCalls)

    def test_introspection(self) -> None:
        """
        C{--introspection} and C{--no-introspection} set the factory's
        option; without either it is left to the policy (L{None}); both
        together are refused.
        """
        svc = tap.makeService(self.parse("--no-introspection"))
        self.assertIs(svc.factory.pbextOptions["introspection"], False)
        svc = tap.makeService(self.parse("--policy", "strict", "--introspection"))
        self.assertIs(svc.factory.pbextOptions["introspection"], True)
        svc = tap.makeService(self.parse())
        self.assertNotIn("introspection", svc.factory.pbextOptions)
        error = self.assertRaises(
            usage.UsageError, self.parse, "--introspection", "--no-introspection"
        )
        self.assertIn("not both", str(error))
