# Run with: python docs/examples/security_limits.py
# Expect: policy 'example' from security_policy.ini: maxOutstandingCalls=2
# Expect: _audit(): refused: PolicyViolation
# Expect: _audit(): refused by the server's security policy
# Expect: missing(): refused: NoSuchMethod
# Expect: No such method: remote_missing
# Expect: third slow() call: refused: PolicyViolation
# Expect: slow(): more than 2 calls unanswered; wait for an answer before calling again
# Expect: first two slow() calls answered: ['done', 'done']
# Expect: still connected: echo('hi') = 'hi'
# Expect: logged events: methodRefused, noSuchMethod, maxOutstandingCalls
"""
What a pbext server refuses, and how: an error answer for one call, while
the connection and every other call carry on.

The server's policy is read from C{security_policy.ini} (next to this file)
with L{pbext.security.loadPolicy}: the C{default} preset with at most two
calls waiting on one connection.  The client then calls a private method
(refused by the policy: it never runs), a method that does not exist
(answered with C{NoSuchMethod}, as classic PB does), and one call more
than the limit allows.  Each refusal is logged by the server as one
structured event whose C{pbextEvent} key is C{"policyViolation"}.
"""

from pathlib import Path

from twisted.internet import defer, endpoints, task
from twisted.logger import globalLogPublisher
from twisted.spread import pb

from pbext import PBClientFactory, PBServerFactory
from pbext.security import loadPolicy

POLICY_FILE = Path(__file__).with_name("security_policy.ini")


class Service(pb.Root):
    def __init__(self):
        self.waiting = []

    def remote_echo(self, value):
        return value

    def remote_slow(self):
        # An answer that comes later: the call stays outstanding meanwhile.
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def remote__audit(self):
        # Never runs under the default policy: the name starts with "_".
        raise AssertionError("a private method was called")

    def finishSlowCalls(self):
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback("done")


async def refusal(call):
    """
    Make a call that should be refused, and describe the refusal.
    """
    try:
        await call
    except pb.RemoteError as e:
        kind = e.remoteType.decode().rpartition(".")[2]
        # The message names the call, what was wrong and what to do.
        return f"refused: {kind}\n{e}"
    return "not refused!"


async def main(reactor):
    events = []

    def observe(event):
        if event.get("pbextEvent") == "policyViolation":
            events.append(event["kind"])

    globalLogPublisher.addObserver(observe)

    policy = loadPolicy(str(POLICY_FILE))
    limit = policy.limits.maxOutstandingCalls
    print(
        f"policy {policy.name!r} from {POLICY_FILE.name}: maxOutstandingCalls={limit}"
    )

    service = Service()
    endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(PBServerFactory(service, policy=policy))
    clientFactory = PBClientFactory()
    reactor.connectTCP("127.0.0.1", port.getHost().port, clientFactory)
    root = await clientFactory.getRootObject()

    print("_audit():", await refusal(root.callRemote("_audit")))
    print("missing():", await refusal(root.callRemote("missing")))

    slow = [root.callRemote("slow") for _ in range(limit)]
    print("third slow() call:", await refusal(root.callRemote("slow")))
    service.finishSlowCalls()
    print("first two slow() calls answered:", list(await defer.gatherResults(slow)))
    print(f"still connected: echo('hi') = {await root.callRemote('echo', 'hi')!r}")

    print("logged events:", ", ".join(events))
    globalLogPublisher.removeObserver(observe)
    clientFactory.disconnect()
    await port.stopListening()


task.react(main)
