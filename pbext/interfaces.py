"""
Extension points of pbext, as zope.interface interfaces.

Every piece of pbext that an application or another installed package may
replace is described here: security policies, copyable registries, and the
plugins through which C{twistd pbserver --policy NAME} and
C{--registry NAME} find them; and so is the role that pbext's two banana
decoders share (L{IDecoder}).  pbext's own implementations are declared
with C{@implementer} and checked with C{verifyObject} in the tests.

@since: pbext NEXT
"""

from __future__ import annotations

from typing import Callable, Mapping

from zope.interface import Attribute, Interface


class ISecurityPolicy(Interface):
    """
    A jelly security policy: what a peer may send, and how much of it.

    A policy is a drop-in for L{twisted.spread.jelly.SecurityOptions}: it
    answers the same questions (C{isTypeAllowed}, C{isModuleAllowed},
    C{isClassAllowed}) so Twisted's jelly can consult it directly, and adds
    limits and per-connection binding.  A policy belongs to a factory; it is
    never process-global state.
    """

    name = Attribute("A short name for this policy (C{str}), used in logs.")

    limits = Attribute(
        "The L{pbext.security.Limits} applied to every connection that uses "
        "this policy."
    )

    allowPrivateMethods = Attribute(
        "C{bool}: whether a peer may call remote methods whose names start "
        "with an underscore."
    )

    def isTypeAllowed(typeName: bytes | str) -> bool:
        """
        Whether a peer may send a jelly type of this name.
        """

    def isModuleAllowed(moduleName: bytes | str) -> bool:
        """
        Whether a peer may name this module.
        """

    def isClassAllowed(klass: type) -> bool:
        """
        Whether instances of this class may be received.
        """

    def isMethodAllowed(name: str) -> bool:
        """
        Whether a peer may call a remote method of this name (the part after
        C{remote_}, C{perspective_}, ...).
        """

    def outgoingTaster() -> object:
        """
        The C{SecurityOptions}-compatible object jelly consults for what
        this side sends (the local program chooses what it sends).
        """

    def forConnection(registries: tuple[ICopyableRegistry, ...]) -> object:
        """
        Bind this policy to the copyable registries of one connection.

        @return: a C{SecurityOptions}-compatible object that allows, in
            addition to what the policy allows, exactly the type names the
            given registries know.
        """


class ICopyableRegistry(Interface):
    """
    A scoped registry of copy-by-value types.

    A registry is owned by one or more factories and consulted by the
    brokers those factories build, never by anyone else: two factories in
    one process with different registries accept different types.
    """

    def isTypeKnown(typeName: bytes) -> bool:
        """
        Whether this registry can build an object from a jelly expression
        tagged C{typeName}.
        """

    def jellyFor(obj: object, jellier: object) -> list[object] | None:
        """
        Serialize C{obj} if its class is registered here for sending.

        @param jellier: the L{twisted.spread.jelly._Jellier}-compatible
            object doing the serialization; its C{invoker} is the broker.

        @return: the jelly expression for C{obj}, or L{None} if this
            registry does not know C{obj}'s class (so the next registry, or
            classic jelly, handles it).
        """

    def unjellyFor(
        typeName: bytes, unjellier: object, jellyList: list[object]
    ) -> object:
        """
        Build the local object for a received expression tagged C{typeName}.

        The received state is checked before any object is built.

        @raise pbext.copyable.CopyableStateError: if the state does not
            match the registered type (unknown, missing or mistyped
            fields).
        """


class IPolicyPlugin(Interface):
    """
    A named security policy that an installed package offers through
    L{twisted.plugin}, so that C{twistd pbserver --policy NAME} finds it.

    Providers live in a C{twisted/plugins/} dropin and must be cheap to
    import: they name the policy and build it only when asked.
    """

    name = Attribute("The name given to C{--policy} (C{str}).")
    description = Attribute("One line saying what the policy is for (C{str}).")

    def load() -> ISecurityPolicy:
        """
        Build a fresh policy object.
        """


class IRegistryPlugin(Interface):
    """
    A named copyable registry that an installed package offers through
    L{twisted.plugin}, so that C{twistd pbserver --registry NAME} finds it.
    """

    name = Attribute("The name given to C{--registry} (C{str}).")
    description = Attribute("One line saying what the registry holds (C{str}).")

    def load() -> ICopyableRegistry:
        """
        Build or return the registry.
        """


class IDecoder(Interface):
    """
    An incremental banana decoder for one connection, checking pbext's
    framing limits as bytes arrive.

    Feed it bytes as they arrive with L{feed} (or L{feedTo}); it returns
    (or delivers) every top-level expression completed by those bytes, as
    the same Python objects L{twisted.spread.banana.Banana} hands to
    C{expressionReceived}: C{list} for lists, C{bytes} for strings, C{int}
    for the four integer types (not range-checked, as in stock), C{float}
    for floats and the vocabulary's C{bytes} for vocabulary tokens.

    Limits are checked as the bytes arrive, before anything is allocated
    for them; the first one broken raises L{pbext.codec.FramingError} and
    leaves the decoder dead (every later call raises again).  Parsing costs
    time linear in the bytes fed, whatever the chunking.

    pbext has two implementations, which accept, refuse and produce the
    same things for the same bytes: L{pbext.codec.PythonDecoder}, the
    specification, and L{pbext.codec.AcceleratedDecoder}, its C twin.
    L{pbext.codec.makeDecoder} chooses one.

    @since: pbext NEXT
    """

    maxPrefixBytes = Attribute("The longest number prefix accepted, in bytes.")
    maxStringBytes = Attribute("The longest string accepted, in bytes.")
    maxListLength = Attribute("The most elements one list may declare.")
    maxDepth = Attribute("How many lists may be open at once.")
    maxMessageTokens = Attribute("How many tokens one message may hold.")
    maxMessageBytes = Attribute("How many bytes one message may take.")

    accelerated = Attribute(
        "C{bool}: whether this decoder parses with pbext's C accelerator "
        "(and so offers plain-jelly decoding, L{setPlainJelly})."
    )
    pendingBytes = Attribute(
        "C{int}: how many bytes of an incomplete top-level expression have "
        "been received (parsed or held); 0 between messages."
    )
    wantedBytes = Attribute(
        "C{int}: how many more bytes complete the string (or float) whose "
        "header has arrived and whose body is still arriving; 0 when no "
        "such token is pending.  A transport can read that much at once."
    )
    messageStarted = Attribute(
        "C{bool}: whether a top-level expression has been partly received."
    )

    def feed(data: bytes) -> list[object]:
        """
        Parse bytes received from the peer.

        All the expressions completed by C{data} are parsed with the
        vocabulary in force when this is called.  The first message of a
        connection selects the dialect, and the peer may send the next one,
        which uses the vocabulary, in the same chunk; a broker that switches
        vocabulary on a message should use L{feedTo} instead, which lets it
        do so before the next token is parsed.

        @param data: The bytes, in any chunking.

        @return: Every top-level expression completed by C{data}, in order.

        @raise pbext.codec.FramingError: If the bytes break a rule or a
            limit (the expressions completed before it in C{data} are
            discarded), or if this decoder already raised one.
        """

    def feedTo(data: bytes, expressionReceived: Callable[[object], object]) -> None:
        """
        Parse bytes received from the peer and hand each completed top-level
        expression to C{expressionReceived} as soon as it is complete.

        This is how L{twisted.spread.banana.Banana.dataReceived} delivers:
        the callback may call L{setVocabulary} and the tokens after that
        expression are parsed with the new vocabulary.  Expressions
        completed before a framing error are delivered before it is raised.
        If the callback raises, the exception propagates and the bytes
        after that expression stay buffered for the next call.  The
        callback must not call L{feed} or L{feedTo} itself.

        @param data: The bytes, in any chunking.
        @param expressionReceived: Called with each expression, in order.

        @raise pbext.codec.FramingError: If the bytes break a rule or a
            limit, or if this decoder already raised one.
        """

    def setVocabulary(vocabulary: Mapping[int, bytes] | None) -> None:
        """
        Accept vocabulary tokens from now on, as when the connection selects
        banana's C{b"pb"} dialect (or stop accepting them, given L{None}).

        Called from inside a L{feedTo} callback, this applies to the very
        next token, as the dialect selection in stock banana does.

        @param vocabulary: Maps token numbers to the words they stand for,
            like L{twisted.spread.banana.Banana.incomingVocabulary}.  A
            C{dict} is read as it is, at each token, as stock banana reads
            its table (not copied: every connection shares Twisted's); any
            other mapping is copied into one.
        """

    def receiveBuffer() -> object | None:
        """
        A writable buffer for the rest of the long string arriving, or
        L{None} when none is.

        Once the header and a sixteenth of a string longer than 64 KiB have
        arrived, the decoder makes a buffer for the string at its final
        size; the rest of its bytes can then be received with
        C{socket.recv_into}, say, instead of into new bytes objects that
        L{feedTo} would copy again.  The buffer holds at least one byte and
        at most L{wantedBytes}.  After writing the first C{count} bytes of
        it, call L{bufferFilled} with C{count}, before feeding or asking
        for another buffer.  Writing into a buffer handed out earlier after
        that call changes nothing received.

        @return: An object supporting the writable buffer protocol, or
            L{None}.
        """

    def bufferFilled(
        count: int, expressionReceived: Callable[[object], object]
    ) -> None:
        """
        Parse the first C{count} bytes written into the buffer from
        L{receiveBuffer}, exactly as L{feedTo} would parse them.

        @param count: How many bytes were written, from the buffer's start.
        @param expressionReceived: As for L{feedTo}.

        @raise ValueError: If no buffer is outstanding (none was asked for,
            or bytes were parsed since), or C{count} is negative or more
            than the buffer holds.
        @raise pbext.codec.FramingError: As for L{feedTo}.
        """

    def setPlainJelly(enabled: bool) -> None:
        """
        Deliver the plain jelly inside messages already unjellied: each
        element of a top-level list that is the jelly of a plain value
        (what L{pbext._jelly.unjellyPlain} turns into a value) is
        delivered as C{pbext._speedups.Jellied(value)}, built while the
        bytes are parsed, without the expression; any other element is the
        usual expression, for the full unjellier.  pbext's broker turns
        this on where its policy lets plain values through.

        Only an L{accelerated} decoder parses this way; call it before any
        bytes are fed.

        @raise ValueError: If this decoder is not L{accelerated}.
        """

    def setPlainTypes(types: Mapping[bytes, object] | None) -> None:
        """
        In plain-jelly mode, also build the registered copyable types whose
        receive specs C{types} holds (L{pbext._jelly.PlainTypes.receive})
        and that can be built without running any code of their own (a
        dataclass with a generated C{__init__}, given every field), as
        L{pbext._jelly.unjellyPlain} builds them.  Any other copy is left
        as an expression, for C{unjellyPlain} or the full unjellier once
        the message is accepted.  Call it before the bytes whose types it
        should apply to are fed.

        @param types: Receive specs by wire name, or L{None} for none.

        @raise ValueError: If this decoder is not L{accelerated}.
        """
