# Run with: twistd -ny docs/examples/client_service.tac
#
# A client that stays connected: it logs in to the server that
# `twistd -n pbserver --auth memory:alice:secret` runs, calls it every few
# seconds, and when the server goes away it waits, reconnects and logs in
# again on its own.  Set PBEXT_CONNECT to connect elsewhere (any client
# endpoint description), and PBEXT_USERNAME / PBEXT_PASSWORD to log in as
# someone else.
import os

from twisted.application import internet, service
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from pbext import PBClientFactory, PBClientService

log = Logger(namespace="client_service")

endpoint = os.environ.get("PBEXT_CONNECT", "tcp:host=127.0.0.1:port=8787")
credentials = UsernamePassword(
    os.environ.get("PBEXT_USERNAME", "alice").encode(),
    os.environ.get("PBEXT_PASSWORD", "secret").encode(),
)


async def greet(avatar):
    # Called with each new avatar: after the first login and every re-login.
    name = await avatar.callRemote("whoami")
    log.info("Logged in as {name}", name=name)


def lost(reason):
    log.info("Connection lost ({reason}); reconnecting", reason=reason.value)


application = service.Application("pbext client")
client = PBClientService(
    endpoint,
    credentials,
    # Ping the server after 30 idle seconds, and drop the connection (then
    # reconnect) if it does not answer within 10 more.
    factory=PBClientFactory(keepaliveInterval=30, keepaliveTimeout=10),
    onConnect=lambda avatar: ensureDeferred(greet(avatar)),
    onDisconnect=lost,
)
client.setServiceParent(application)


async def tick():
    # whenConnected() fires at once while connected; a call on a connection
    # that just died fails with PBConnectionLost or DeadReferenceError, and
    # the next tick uses the new connection.
    if client.state != "connected":
        failure = client.lastFailure
        log.info(
            "Not connected ({state}); last failure: {failure}",
            state=client.state,
            failure=failure.getErrorMessage() if failure else None,
        )
        return
    avatar = await client.whenConnected()
    try:
        log.info("Echo: {echo}", echo=await avatar.callRemote("echo", "tick"))
    except Exception as e:
        log.info("Call failed: {error!r}", error=e)


internet.TimerService(5, lambda: ensureDeferred(tick())).setServiceParent(application)
