"""
The renames of issue 18 (pbext's state on classes applications subclass
moved under C{_pbext} names), as a script that applies them to a checkout.

Run it on a branch made before the renames, to adapt that branch's code,
one scope at a time (see L{SCOPES})::

    python tools/issue18_renames.py broker pbext/broker.py tests/test_x.py
    python tools/issue18_renames.py factory pbext/server.py

It rewrites attribute accesses (C{self.NAME}, C{broker.NAME}, ...) and
C{def NAME} of the renamed names, and nothing else (not C{super().NAME},
strings or docstrings): review the diff afterwards.  In pbext/broker.py
the broker scope also rewrites the factory mixin's C{self.policy}; the
mixin was rewritten by hand (L{FACTORY} says where each name went).  A
one-off merge aid: delete it once every branch is merged.
"""

from __future__ import annotations

import re
import sys


def _private(name: str) -> str:
    return "_pbext" + name[1].upper() + name[2:]


#: pbext.broker.Broker: pbext's own private names (Twisted's pb.Broker and
#: banana.Banana names, such as _sendMessage, _recvMessage, _sendError,
#: _sendAnswer and _selectDialect, keep theirs).
BROKER_PRIVATE = """
_abandon _abandoned _answerFailure _backlog _cancelIncoming _cancelTimer
_chainedSendMessage _checkReturn _classicDispatch _clock _control _decoder
_directReads _dispatch _drain _drainCall _dropConnection _eventCount
_eventWindow _expressionDecoded _failCall _fusedReceive _fusedSend _getClock
_handshakeDone _idleTimerFired _incomingTaster _keepalive _knownID
_lastHeard _outgoingTaster _outgoingVocabulary _parse _pauseReading
_pausedBytes _peerName _plainReceive _plainSend _plainTypes _producing
_readPauses _receiveBuffer _receivedInto _refuse _resumeReading _running
_sendPages _serializeOut _setTimer _startKeepalive _suppressed _takeWaiting
_timedOut _timeoutCall _timers _violation _write _writeJoined _writePaused
_writeSequence _writeToTransport
""".split()

#: pbext.broker.Broker: plain names that became private (read them with
#: care: C{policy.limits} of a SecurityPolicy is not renamed).
BROKER_PUBLIC = {
    "policy": "_pbextPolicy",
    "limits": "_pbextLimits",
    "registries": "_pbextRegistries",
    "peerFeatures": "_pbextPeerFeatures",
}

#: pbext.metrics.MeteredBroker.
METERED = "_instrumentation _metricCalls _metricPeer _metrics _finishCall".split()

#: pbext.client.PBClientService.
SERVICE_PRIVATE = """
_description _clock _onConnect _onDisconnect _retryPolicy _refusedRetryPolicy
_timeout _broker _reference _timeoutCall _connecting _attemptEnded
_failedAttempts _refusedAttempts _lastRefused _stopped _waiters _attempt
_connectFailed _timedOut _brokerBuilt _brokerReady _gotReference _refused
_brokerLost _attemptFailed _retryDelay _cancelTimeout _callHook
""".split()

#: The factories (BrokerFactoryMixin, PBServerFactory, PBClientFactory):
#: old attribute -> new expression.
FACTORY = {
    "policy": "pbextPolicy",
    "registries": "pbextRegistries",
    "options": "pbextOptions",
    "_reactor": "_pbext.reactor",
    "_brokerOptions": "_pbext.brokerOptions",
    "_connectionRegistries": "_pbext.connectionRegistries",
    "_setUpPbext": "_pbextSetUp",
    "_buildBroker": "_pbextBuildBroker",
    "connectionCount": "_pbext.connectionCount",
    "_perAddress": "_pbext.perAddress",
    "_brokerLost": "_pbext.brokerLost",
    "loginOnRoot": "pbextLoginOnRoot",
}

#: Also renamed by hand: the class attribute C{forwardsReceivedBytes} a
#: protocol wrapper sets (pbext.client._LossReporter) is now
#: C{_pbextForwardsReceivedBytes}, read by pbext.broker._deliversTo.

BROKER = {name: _private(name) for name in BROKER_PRIVATE}
BROKER.update(BROKER_PUBLIC)


def rename(text: str, mapping: dict[str, str], owners: str = r"self") -> str:
    """
    Rewrite C{OWNER.NAME} and C{def NAME} for each C{NAME} of C{mapping}.
    """
    for old, new in mapping.items():
        text = re.sub(rf"\b({owners})\.{old}\b", rf"\1.{new}", text)
        text = re.sub(rf"\bdef {old}\b", f"def {new}", text)
    return text


#: Which mapping each scope applies, and on which owners.
SCOPES: dict[str, tuple[dict[str, str], str]] = {
    # Code of pbext.broker.Broker and its subclasses, and code reaching
    # into a broker (tests).
    "broker": (BROKER, r"self|broker|proto|server|client|self\.broker"),
    # Code of pbext.metrics.MeteredBroker.
    "metered": ({**BROKER, **{n: _private(n) for n in METERED}}, r"self"),
    # Code of PBClientService (only inside that class: _clock, _broker ...
    # are common names elsewhere).
    "service": ({n: _private(n) for n in SERVICE_PRIVATE}, r"self"),
    # Code of the factories (server.py, client.py, the factory mixin) and
    # code reaching into a factory.
    "factory": (FACTORY, r"self|factory|self\.factory|svc\.factory"),
}


def main(scope: str, paths: list[str]) -> None:
    mapping, owners = SCOPES[scope]
    for path in paths:
        with open(path) as f:
            text = f.read()
        new = rename(text, mapping, owners)
        if new != text:
            with open(path, "w") as f:
                f.write(new)
            print(f"renamed {scope} names in", path)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in SCOPES:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(SCOPES)}}} FILE...")
    main(sys.argv[1], sys.argv[2:])
