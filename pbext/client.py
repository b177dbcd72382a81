"""
The client side of pbext: L{PBClientFactory}, L{connect} and
L{PBClientService}.

L{PBClientFactory} is a drop-in replacement for
L{twisted.spread.pb.PBClientFactory}: same arguments, same attributes, same
private hooks (C{_cbSendUsername}, C{_root}, C{_broker}, C{_failAll}), and
pbext's hardened L{pbext.broker.Broker}.  Unlike the stock factory, its
pending L{getRootObject <PBClientFactory.getRootObject>} and
L{login <PBClientFactory.login>} L{Deferred}s fail when a connection attempt
made through an endpoint fails, instead of waiting forever (twisted#4976).

L{connect} is the one-call way to get a root object or an avatar, and
L{PBClientService} keeps a connection up for the life of a program: it
reconnects with backoff and logs in again after every reconnection.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.cred.error import LoginFailed
from twisted.internet import endpoints, error
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.spread.jelly import SecurityOptions, globalSecurity
from zope.interface import implementer

from pbext import _twisted
from pbext.broker import Broker, BrokerFactoryMixin
from pbext.interfaces import ICopyableRegistry
from pbext.security import SecurityPolicy

__all__ = ["PBClientFactory", "PBClientService", "connect"]


class PBClientFactory(pb.PBClientFactory, BrokerFactoryMixin):
    """
    Client factory for Perspective Broker, hardened by pbext.

    Use it exactly like L{pb.PBClientFactory}.  Two things differ:

      - When a connection attempt ends without a PB connection (refused,
        timed out, or closed before the PB handshake finished), pending
        L{getRootObject} and L{login} L{Deferred}s fail with
        L{error.ConnectError} even when the attempt was made through an
        endpoint, which never calls L{clientConnectionFailed}.  L{connect}
        reports the precise reason instead.
      - Logging in on a root object is one method, L{pbextLoginOnRoot},
        shared by L{login}, L{connect} and L{PBClientService}.

    The keyword-only options are pbext's, the same as
    L{pbext.server.PBServerFactory}'s; see L{pbext.broker.Broker} for what
    each does.  C{keepaliveInterval} and C{keepaliveTimeout} turn on the
    keepalive of L{pbext.keepalive}: after C{keepaliveInterval} seconds
    without a byte from the server, it is pinged, and the connection is
    dropped if no answer comes within C{keepaliveTimeout} seconds.

    pbext's state lives in one attribute, C{_pbext}; what it adds in
    public starts with C{pbext} (L{pbextPolicy}, L{pbextRegistries},
    L{pbextOptions}, L{pbextLoginOnRoot}), so a subclass may define any
    other name.
    """

    protocol = Broker

    def __init__(
        self,
        unsafeTracebacks: bool = False,
        security: SecurityOptions = globalSecurity,
        *,
        policy: SecurityPolicy | str | None = None,
        registry: ICopyableRegistry | Sequence[ICopyableRegistry] | None = None,
        reactor: IReactorTime | None = None,
        callTimeout: float | None = None,
        keepaliveInterval: float | None = None,
        keepaliveTimeout: float | None = None,
        typedCalls: bool | None = None,
        **pbextOptions: Any,
    ) -> None:
        super().__init__(unsafeTracebacks, security)
        self._pbextSetUp(
            security,
            policy,
            registry,
            reactor,
            callTimeout,
            keepaliveInterval,
            keepaliveTimeout,
            pbextOptions,
            typedCalls,
        )

    def buildProtocol(self, addr: IAddress | None) -> pb.Broker:
        """
        Build a client broker with this factory's policy, registries and
        options.
        """
        return self._pbextBuildBroker(isClient=True)

    def stopFactory(self) -> None:
        """
        Every connection attempt using this factory has ended: fail the
        L{getRootObject} and L{login} requests still waiting for a root.

        Connectors call L{clientConnectionFailed} or L{clientConnectionLost}
        before this, which already failed them with the precise reason;
        endpoints call neither, and this is the only notice the factory
        gets.
        """
        super().stopFactory()
        if self.rootObjectRequests:
            _twisted.failAll(
                self,
                Failure(
                    error.ConnectError(
                        string="the connection attempt ended before the PB "
                        "connection was ready"
                    )
                ),
            )

    def login(
        self, credentials: object, client: object = None
    ) -> Deferred[pb.RemoteReference]:
        """
        Log in and get a reference to an avatar on the remote PB server.

        @param credentials: L{twisted.cred.credentials.IUsernamePassword} or
            L{twisted.cred.credentials.IAnonymous}.
        @param client: the I{mind}: a referenceable object the server's realm
            receives along with the login.
        @return: a L{Deferred} firing with a L{pb.RemoteReference} to the
            avatar, or failing (with L{twisted.cred.error.UnauthorizedLogin}
            if the server refused the credentials).
        """
        return self.getRootObject().addCallback(
            self.pbextLoginOnRoot, credentials, client
        )

    def pbextLoginOnRoot(
        self, root: pb.RemoteReference, credentials: object, client: object = None
    ) -> Deferred[pb.RemoteReference]:
        """
        Log in through an already obtained root object.

        This is the only place pbext's client logs in: L{login}, L{connect}
        and L{PBClientService} all come here.  Against a stock server it
        speaks PB's classic challenge/response (or anonymous) login through
        the C{_cbSendUsername} and C{_cbLoginAnonymous} hooks, which
        subclasses may override as they do for L{pb.PBClientFactory};
        against a pbext server it picks the strongest login both ends allow
        (see L{pbext.loginclient.loginOnRoot}; the C{allowPlaintextLogin} and
        C{classicLogin} options say which the client allows).

        @param root: the root object of the connection to log in on.
        @param credentials: see L{login}; also
            L{pbext.login.CertificateLogin}, to log in with the TLS client
            certificate of the connection.
        @param client: see L{login}.
        @return: see L{login}.
        @since: pbext NEXT
        """
        from pbext import loginclient

        return loginclient.loginOnRoot(self, root, credentials, client)


class _LossReporter:
    """
    Stands between a transport and a broker to learn why the connection
    was lost: L{pb.Broker.notifyOnDisconnect} callbacks are not told.

    Everything else is forwarded to the broker, including the interfaces
    it provides (this class declares none of its own).

    @cvar _pbextForwardsReceivedBytes: Received bytes reach the broker's
        C{dataReceived} unchanged, so the broker may have its transport
        receive long strings in place (see L{pbext.broker.Broker}).
    """

    _pbextForwardsReceivedBytes = True

    def __init__(
        self, broker: pb.Broker, lost: Callable[[pb.Broker, Failure], None]
    ) -> None:
        self.broker = broker
        self._lost = lost

    def makeConnection(self, transport: Any) -> None:
        self.broker.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.broker.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        try:
            self.broker.connectionLost(reason)
        finally:
            self._lost(self.broker, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.broker, name)


@implementer(IProtocolFactory)
class _BrokerWatcher:
    """
    Wraps a L{PBClientFactory} to hear of every broker it builds and of the
    reason each one's connection was lost.

    The factory itself stays the broker's C{factory}, so its own
    bookkeeping (C{clientConnectionMade}, L{PBClientFactory.getRootObject})
    works as usual.
    """

    def __init__(
        self,
        factory: pb.PBClientFactory,
        built: Callable[[pb.Broker], None],
        lost: Callable[[pb.Broker, Failure], None],
    ) -> None:
        self._factory = factory
        self._built = built
        self._lost = lost

    def buildProtocol(self, addr: IAddress) -> IProtocol | None:
        broker = self._factory.buildProtocol(addr)
        if broker is None:
            return None
        self._built(broker)
        return cast(IProtocol, _LossReporter(broker, self._lost))

    def doStart(self) -> None:
        self._factory.doStart()

    def doStop(self) -> None:
        self._factory.doStop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


def _requestReference(
    factory: PBClientFactory, broker: pb.Broker, credentials: Any, mind: Any
) -> Deferred[pb.RemoteReference]:
    """
    Get what a ready C{broker} leads to: its root, or with C{credentials}
    the avatar it logs in to.
    """
    root = broker.remoteForName("root")
    if credentials is None:
        return succeed(root)
    return maybeDeferred(factory.pbextLoginOnRoot, root, credentials, mind)


def _abort(broker: pb.Broker) -> None:
    """
    Close C{broker}'s connection now, without waiting for its write buffer
    to drain (the peer may not be reading).
    """
    transport: Any = broker.transport
    getattr(transport, "abortConnection", transport.loseConnection)()


def _globalReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _endpoint(
    reactor: Any, endpointOrDescription: IStreamClientEndpoint | str
) -> IStreamClientEndpoint:
    if isinstance(endpointOrDescription, str):
        from pbext._extras import checkTLSEndpoint

        # Without the tls extra Twisted fails with a NameError: say which
        # extra to install instead.
        checkTLSEndpoint(endpointOrDescription)
        return endpoints.clientFromString(reactor, endpointOrDescription)
    return endpointOrDescription


class _Connecting:
    """
    One L{connect} call: an endpoint connection, a root or a login, and the
    L{Deferred} the caller holds.

    @ivar result: the caller's L{Deferred}.
    """

    def __init__(self, factory: PBClientFactory, credentials: Any, mind: Any) -> None:
        self._factory = factory
        self._credentials = credentials
        self._mind = mind
        self._broker: pb.Broker | None = None
        self._connecting: Deferred[Any] | None = None
        self._refusal: Failure | None = None
        self._cancelled = False
        self.result: Deferred[pb.RemoteReference] = Deferred(self._cancel)

    def start(self, endpoint: IStreamClientEndpoint) -> Deferred[pb.RemoteReference]:
        watcher = _BrokerWatcher(self._factory, self._built, self._lost)
        self._connecting = endpoint.connect(watcher)
        self._connecting.addErrback(self._finish)
        return self.result

    def _built(self, broker: pb.Broker) -> None:
        self._broker = broker
        broker.notifyOnConnect(self._ready)

    def _ready(self) -> None:
        broker = self._broker
        if broker is None or self.result.called:
            return
        _requestReference(
            self._factory, broker, self._credentials, self._mind
        ).addCallbacks(self._gotReference, self._refused)

    def _gotReference(self, reference: pb.RemoteReference) -> None:
        if self.result.called:
            # Cancelled while the answer was on its way.
            self._close()
            return
        self.result.callback(reference)

    def _refused(self, reason: Failure) -> None:
        if self._broker is None or self._broker.disconnected:
            # The connection was lost: _lost reports why.
            return
        # Report the refusal once the connection is closed, so that a
        # failed connect() leaves nothing open.  A refused login is raised
        # as the local twisted.cred error, not a bare RemoteError.
        from pbext._refusals import localRefusal

        self._refusal = localRefusal(reason)
        self._close()

    def _lost(self, broker: pb.Broker, reason: Failure) -> None:
        self._finish(self._refusal or reason)

    def _finish(self, reason: Failure) -> None:
        if not self.result.called and not self._cancelled:
            self.result.errback(reason)

    def _close(self) -> None:
        if self._broker is not None and not self._broker.disconnected:
            _abort(self._broker)

    def _cancel(self, result: Deferred[pb.RemoteReference]) -> None:
        # Deferred.cancel fails the result with CancelledError on return.
        self._cancelled = True
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        self._close()


def connect(
    reactor: IReactorTime,
    endpointOrDescription: IStreamClientEndpoint | str,
    credentials: object = None,
    *,
    mind: object = None,
    factory: PBClientFactory | None = None,
    timeout: float | None = 30,
) -> Deferred[pb.RemoteReference]:
    """
    Connect to a PB server and get its root object, or log in.

    ::

        root = await connect(reactor, "tcp:host=example.com:port=8787")
        avatar = await connect(
            reactor, "tls:example.com:8787", UsernamePassword(b"alice", b"s3")
        )

    The connection stays open after success; close it with
    C{reference.broker.transport.loseConnection()} (or the factory's
    C{disconnect()}).  After a failure nothing is left open.

    @param reactor: the reactor to connect with and time out on.
    @param endpointOrDescription: an L{IStreamClientEndpoint}, or a client
        endpoint description for L{endpoints.clientFromString} such as
        C{"tcp:host=127.0.0.1:port=8787"}, C{"tls:host=example.com:port=8787"}
        or C{"unix:path=/run/app.sock"}.
    @param credentials: L{None} to get the root object; otherwise
        credentials for L{PBClientFactory.pbextLoginOnRoot}
        (L{twisted.cred.credentials.UsernamePassword} or
        L{twisted.cred.credentials.Anonymous}).
    @param mind: with C{credentials}, the I{mind} handed to the server's
        realm.
    @param factory: the L{PBClientFactory} to connect with, to choose its
        options; by default a new one keeping time with C{reactor}.
    @param timeout: seconds allowed for connecting and logging in, or
        L{None} for no limit beyond the endpoint's own.
    @return: a L{Deferred} that fires with the root object's or the
        avatar's L{pb.RemoteReference}.  It fails with the reason the
        connection failed (such as L{error.ConnectionRefusedError}), the
        login's failure (such as L{twisted.cred.error.UnauthorizedLogin}),
        the reason the connection closed before either (such as a TLS
        error), or L{twisted.internet.defer.TimeoutError} after C{timeout}.
        Cancelling it abandons the attempt and closes the connection.
    """
    if factory is None:
        factory = PBClientFactory(reactor=reactor)
    attempt = _Connecting(factory, credentials, mind)
    result = attempt.start(_endpoint(reactor, endpointOrDescription))
    if timeout is not None and not result.called:
        result.addTimeout(timeout, reactor)
    return result


def _defaultRetryPolicy() -> Callable[[int], float]:
    return backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=1.5)


def _defaultRefusedRetryPolicy() -> Callable[[int], float]:
    return backoffPolicy(initialDelay=60.0, maxDelay=3600.0, factor=2.0)


@implementer(IStreamClientEndpoint)
class _AttemptEndpoint:
    """
    The endpoint a L{PBClientService} hands to L{ClientService}: tells the
    service when each attempt starts.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        attempt: Callable[[IStreamClientEndpoint, IProtocolFactory], Deferred[Any]],
    ) -> None:
        self._endpoint = endpoint
        self._attempt = attempt

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        return self._attempt(self._endpoint, protocolFactory)


class PBClientService(ClientService):
    """
    A service that keeps a PB connection up: it connects, gets the root
    object or logs in, and after any failure or lost connection waits and
    does it all again, for as long as it runs.

    In a C{.tac} file::

        from twisted.application import service
        from twisted.cred.credentials import UsernamePassword
        from pbext.client import PBClientService

        application = service.Application("worker")
        PBClientService(
            "tcp:host=master.example.com:port=8787",
            UsernamePassword(b"worker1", b"s3cret"),
            onConnect=startWork,
        ).setServiceParent(application)

    Waits between attempts grow with C{retryPolicy} (exponential backoff
    with jitter by default), counting every attempt since the last
    successful login, so a server that accepts connections but fails every
    login is not hammered either.  A refused login
    (L{twisted.cred.error.LoginFailed}, such as a wrong password) is
    retried on the separate, much slower C{refusedRetryPolicy}: a password
    does not fix itself in a second.

    The service emits structured log events, each with a C{pbextEvent}
    key: C{"connected"}, C{"disconnected"}, C{"attemptFailed"} and
    C{"loginRefused"} (a warning), along with C{endpoint} and, for
    failures, C{reason} (a L{Failure}).

    @ivar state: C{"stopped"} (not running), C{"connecting"} (an attempt is
        under way, including the handshake and login), C{"connected"} (a
        reference is available), or C{"waiting"} (before the next attempt).
    @ivar lastFailure: the L{Failure} that ended the latest failed attempt
        or lost connection, or L{None} if nothing failed yet.  It is kept
        after a later success: look at C{state} for the present.
    @ivar factory: the L{PBClientFactory} that builds the brokers.
    @ivar endpoint: the endpoint connected to.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamClientEndpoint | str,
        credentials: object = None,
        *,
        mind: object = None,
        factory: PBClientFactory | None = None,
        onConnect: Callable[[pb.RemoteReference], object] | None = None,
        onDisconnect: Callable[[Failure], object] | None = None,
        retryPolicy: Callable[[int], float] | None = None,
        refusedRetryPolicy: Callable[[int], float] | None = None,
        timeout: float | None = 30,
        reactor: IReactorTime | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param endpoint: an L{IStreamClientEndpoint}, or a client endpoint
            description such as C{"tcp:host=127.0.0.1:port=8787"}.
        @param credentials: L{None} to use the root object; otherwise the
            credentials to log in with after every connection.
        @param mind: with C{credentials}, the I{mind} handed to the realm.
        @param factory: the L{PBClientFactory} that builds the brokers, to
            choose its options (keepalive, policy, timeouts); by default a
            new one keeping time with C{clock}.
        @param onConnect: called with the new root or avatar reference after
            every successful connection and login.
        @param onDisconnect: called with the reason when a connection that
            was passed to C{onConnect} is lost (also when the service
            stops).
        @param retryPolicy: seconds to wait before the next attempt, given
            how many attempts failed since the last successful login; by
            default L{backoffPolicy}C{(1.0, 60.0, 1.5)}: 1.5s, 2.25s, ...
            up to a minute, plus up to a second of random jitter.
        @param refusedRetryPolicy: the same, given how many logins in a row
            the server refused; by default L{backoffPolicy}C{(60.0, 3600.0,
            2.0)}: two minutes, four, ... up to an hour.
        @param timeout: seconds an attempt may take from starting to connect
            to holding a reference; a server that accepts the connection
            but never answers is given up on after this.  L{None} for no
            limit.
        @param reactor: the reactor, to parse C{endpoint} descriptions and
            keep time with; the global reactor by default.
        @param clock: the clock to keep time with, if not C{reactor}
            (L{twisted.internet.task.Clock} in tests).
        """
        if reactor is None and (clock is None or isinstance(endpoint, str)):
            reactor = _globalReactor()
        if clock is None:
            # The global reactor, if no reactor was given either.
            assert reactor is not None
            clock = reactor
        self.endpoint = _endpoint(reactor, endpoint)
        if factory is None:
            factory = PBClientFactory(reactor=clock)
        self.factory = factory
        self.credentials = credentials
        self.mind = mind
        self.state = "stopped"
        self.lastFailure: Failure | None = None
        self._pbextDescription = (
            endpoint if isinstance(endpoint, str) else repr(endpoint)
        )
        self._pbextClock = clock
        self._pbextOnConnect = onConnect
        self._pbextOnDisconnect = onDisconnect
        self._pbextRetryPolicy = retryPolicy or _defaultRetryPolicy()
        self._pbextRefusedRetryPolicy = (
            refusedRetryPolicy or _defaultRefusedRetryPolicy()
        )
        self._pbextTimeout = timeout
        self._pbextBroker: pb.Broker | None = None
        self._pbextReference: pb.RemoteReference | None = None
        self._pbextTimeoutCall: IDelayedCall | None = None
        self._pbextConnecting: Deferred[Any] | None = None
        self._pbextAttemptEnded = False
        self._pbextFailedAttempts = 0
        self._pbextRefusedAttempts = 0
        self._pbextLastRefused = False
        self._pbextStopped = False
        self._pbextWaiters: list[list[Any]] = []
        super().__init__(
            _AttemptEndpoint(self.endpoint, self._pbextAttempt),
            _BrokerWatcher(self.factory, self._pbextBrokerBuilt, self._pbextBrokerLost),
            retryPolicy=self._pbextRetryDelay,
            clock=clock,
        )

    # Public API

    # The ignore below: ClientService's gives a protocol, this a reference.
    def whenConnected(  # type: ignore[override]
        self, failAfterFailures: int | None = None
    ) -> Deferred[pb.RemoteReference]:
        """
        Get the current root or avatar reference, or the next one.

        @param failAfterFailures: fail after this many attempts in a row
            failed (with the last attempt's reason); L{None} to wait as long
            as the service runs.
        @return: a L{Deferred} that fires at once with the current reference
            when connected, otherwise with the next one.  It fails with
            L{CancelledError} when the service stops (at once if it already
            did).
        """
        if self._pbextStopped:
            return fail(CancelledError())
        if self._pbextReference is not None:
            return succeed(self._pbextReference)
        entry: list[Any] = []
        waiter: Deferred[pb.RemoteReference] = Deferred(
            lambda d: self._pbextWaiters.remove(entry)
        )
        entry.extend([waiter, failAfterFailures])
        self._pbextWaiters.append(entry)
        return waiter

    def startService(self) -> None:
        """
        Start connecting.
        """
        if not self.running:
            self._pbextStopped = False
            self.state = "connecting"
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop: cancel the attempt under way or the wait for the next one,
        close the connection, and fail the L{whenConnected} L{Deferred}s
        still waiting.

        @return: a L{Deferred} that fires once the connection is closed.
        """
        self._pbextStopped = True
        self.state = "stopped"
        self._pbextCancelTimeout()
        waiters, self._pbextWaiters = self._pbextWaiters, []
        for waiter, _ in waiters:
            waiter.errback(CancelledError())
        return super().stopService()

    # Attempts

    def _pbextAttempt(
        self, endpoint: IStreamClientEndpoint, factory: IProtocolFactory
    ) -> Deferred[Any]:
        """
        L{ClientService} starts an attempt.
        """
        self.state = "connecting"
        self._pbextAttemptEnded = False
        # Armed first: an endpoint may connect (and a login may finish)
        # before connect() returns.
        if self._pbextTimeout is not None:
            self._pbextTimeoutCall = self._pbextClock.callLater(
                self._pbextTimeout, self._pbextTimedOut
            )
        self._pbextConnecting = endpoint.connect(factory)
        return self._pbextConnecting.addErrback(self._pbextConnectFailed)

    def _pbextConnectFailed(self, reason: Failure) -> Failure:
        self._pbextAttemptFailed(reason)
        # ClientService schedules the next attempt.
        return reason

    def _pbextTimedOut(self) -> None:
        self._pbextTimeoutCall = None
        connecting = self._pbextConnecting
        self._pbextAttemptFailed(
            Failure(
                error.TimeoutError(
                    string=f"no PB reference within {self._pbextTimeout} seconds"
                )
            )
        )
        if connecting is not None and not connecting.called:
            connecting.cancel()
        elif self._pbextBroker is not None:
            _abort(self._pbextBroker)

    def _pbextBrokerBuilt(self, broker: pb.Broker) -> None:
        self._pbextBroker = broker
        broker.notifyOnConnect(lambda: self._pbextBrokerReady(broker))

    def _pbextBrokerReady(self, broker: pb.Broker) -> None:
        if broker is not self._pbextBroker or not self.running:
            return
        _requestReference(
            self.factory, broker, self.credentials, self.mind
        ).addCallbacks(
            self._pbextGotReference,
            self._pbextRefused,
            callbackArgs=(broker,),
            errbackArgs=(broker,),
        )

    def _pbextGotReference(
        self, reference: pb.RemoteReference, broker: pb.Broker
    ) -> None:
        if broker is not self._pbextBroker or broker.disconnected or not self.running:
            return
        self._pbextCancelTimeout()
        self._pbextReference = reference
        self.state = "connected"
        self._pbextFailedAttempts = self._pbextRefusedAttempts = 0
        self._pbextLastRefused = False
        self._log.info(
            "Connected to {endpoint}",
            endpoint=self._pbextDescription,
            pbextEvent="connected",
        )
        self._pbextCallHook(self._pbextOnConnect, reference)
        if self._pbextReference is reference:
            waiters, self._pbextWaiters = self._pbextWaiters, []
            for waiter, _ in waiters:
                waiter.callback(reference)

    def _pbextRefused(self, reason: Failure, broker: pb.Broker) -> None:
        if broker is not self._pbextBroker or broker.disconnected:
            # The connection was lost: _pbextBrokerLost reports why.
            return
        self._pbextAttemptFailed(reason, refused=reason.check(LoginFailed) is not None)
        transport: Any = broker.transport
        transport.loseConnection()

    def _pbextBrokerLost(self, broker: pb.Broker, reason: Failure) -> None:
        if broker is not self._pbextBroker:
            return
        self._pbextBroker = None
        self._pbextCancelTimeout()
        reference, self._pbextReference = self._pbextReference, None
        if reference is None:
            self._pbextAttemptFailed(reason)
            return
        if self.running:
            self.state = "waiting"
            self.lastFailure = reason
            self._log.info(
                "Connection to {endpoint} lost: {reason.value}",
                endpoint=self._pbextDescription,
                reason=reason,
                pbextEvent="disconnected",
            )
        self._pbextCallHook(self._pbextOnDisconnect, reason)

    def _pbextAttemptFailed(self, reason: Failure, refused: bool = False) -> None:
        """
        The attempt under way failed; record why, once.
        """
        if self._pbextAttemptEnded or not self.running:
            return
        self._pbextAttemptEnded = True
        self._pbextCancelTimeout()
        self.state = "waiting"
        self.lastFailure = reason
        self._pbextLastRefused = refused
        if refused:
            self._log.warn(
                "{endpoint} refused the login: {reason.value}; retrying slowly",
                endpoint=self._pbextDescription,
                reason=reason,
                pbextEvent="loginRefused",
            )
        else:
            self._log.info(
                "Attempt to connect to {endpoint} failed: {reason.value}",
                endpoint=self._pbextDescription,
                reason=reason,
                pbextEvent="attemptFailed",
            )
        ready = []
        for entry in self._pbextWaiters:
            if entry[1] is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    ready.append(entry)
        for entry in ready:
            self._pbextWaiters.remove(entry)
            entry[0].errback(reason)

    def _pbextRetryDelay(self, attempt: int) -> float:
        """
        L{ClientService}'s retry policy: how long to wait now.  Counts
        attempts since the last login, not since the last connection.
        """
        self.state = "waiting"
        self._pbextFailedAttempts += 1
        if self._pbextLastRefused:
            self._pbextRefusedAttempts += 1
            return self._pbextRefusedRetryPolicy(self._pbextRefusedAttempts)
        return self._pbextRetryPolicy(self._pbextFailedAttempts)

    def _pbextCancelTimeout(self) -> None:
        call, self._pbextTimeoutCall = self._pbextTimeoutCall, None
        if call is not None and call.active():
            call.cancel()

    def _pbextCallHook(
        self, hook: Callable[[Any], object] | None, argument: Any
    ) -> None:
        if hook is None:
            return
        try:
            result = hook(argument)
        except Exception:
            self._log.failure("Error in the {hook!r} hook", hook=hook)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda f: self._log.failure("Error in the {hook!r} hook", f, hook=hook)
            )
