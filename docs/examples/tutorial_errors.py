# Run with: python docs/examples/tutorial_errors.py
# Expect: withdraw(500): refused: InsufficientFunds: balance is 100
# Expect: withdraw(-1): failed: builtins.ValueError
# Expect: _audit(): refused by the security policy
# Expect: Traceback on the client: no (unsafeTracebacks is off)
"""
What the caller sees when a remote method fails.

An exception raised by a remote method travels back as a
L{twisted.spread.pb.CopiedFailure}: a copy of the failure whose C{type} is
the exception's qualified class name as C{bytes}, not the class itself.
Test it with C{failure.check(SomeError)}.

Raise a subclass of L{pb.Error} for errors that are part of your protocol:
the server does not log them.  Any other exception is a bug of the server:
it is logged there with its traceback, and the caller still gets a
CopiedFailure, without the server's traceback unless the server factory was
built with C{unsafeTracebacks=True}.
"""

import sys

from twisted.internet import endpoints, task
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory


class InsufficientFunds(pb.Error):
    """
    An expected, application-level error: a subclass of L{pb.Error}.
    """


class Account(pb.Root):
    balance = 100

    def remote_withdraw(self, amount):
        if amount > self.balance:
            raise InsufficientFunds(f"balance is {self.balance}")
        if amount < 0:
            raise ValueError("a negative amount")  # a bug: logged by the server
        self.balance -= amount
        return self.balance

    def remote__audit(self):
        return "secrets"


async def main(reactor):
    # Show the server's log (on stderr): the ValueError is logged there.
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)], redirectStandardIO=False
    )

    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(Account()))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    # With callbacks: the errback receives the CopiedFailure.
    def explain(failure):
        if failure.check(InsufficientFunds):
            return f"refused: InsufficientFunds: {failure.getErrorMessage()}"
        return f"failed: {failure.type.decode('ascii')}"

    print("withdraw(500):", await root.callRemote("withdraw", 500).addErrback(explain))
    print("withdraw(-1):", await root.callRemote("withdraw", -1).addErrback(explain))

    # With await: a CopiedFailure is raised as pb.RemoteError, whose
    # remoteType is the same bytes.
    try:
        await root.callRemote("_audit")
    except pb.RemoteError as e:
        print("_audit(): refused by the security policy")
        print("    remoteType:", e.remoteType)

    # The traceback a CopiedFailure carries is the server's only when the
    # server allows it.
    failures = []
    await root.callRemote("withdraw", -1).addErrback(failures.append)
    hasTraceback = "remote_withdraw" in failures[0].getTraceback()
    print(
        "Traceback on the client:",
        "yes" if hasTraceback else "no (unsafeTracebacks is off)",
    )

    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
