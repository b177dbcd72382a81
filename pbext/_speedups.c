/*
 * pbext._speedups: the optional C accelerator of pbext's codec and jelly
 * fast paths.
 *
 * Everything here has a pure-Python twin that is the specification:
 *
 *   encode        pbext.codec._encodePython  (banana encoding)
 *   DecoderCore   the parser of pbext.codec.AcceleratedDecoder (banana decoding)
 *   jellyPlain    pbext._jelly._jellyPlainPython
 *   unjellyPlain  pbext._jelly._unjellyPlainPython
 *
 * and the tests run both on the same inputs and require the same bytes,
 * the same objects and the same errors.  Where an input is unusual (an
 * integer subclass, a huge integer) the C code calls back into the Python
 * twin's helpers rather than re-implementing them, so the two cannot
 * drift.  The Python modules hand those helpers (and their exception
 * classes) to configure() when they import this module.
 *
 * Nothing here keeps state between calls except that configuration,
 * which never changes after import.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <stdint.h>
#ifndef MS_WINDOWS
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>
/* DecoderCore.receiveFrom: a long string's bytes received from a socket
 * straight into the string (see there). */
#define RECEIVES_FROM_SOCKETS 1
#endif

/* Nesting depth of the recursive jelly walks below, held to Python's
 * recursion limit as their pure-Python twins are.  From Python 3.13 on,
 * Py_EnterRecursiveCall counts against a fixed C limit (thousands deep)
 * instead of sys.getrecursionlimit(), so the C walks would accept values
 * the pure-Python code refuses; a per-thread count keeps the two alike. */
static _Thread_local int nestedDepth = 0;

static int
enterNested(const char *where)
{
    if (Py_EnterRecursiveCall(where)) {
        return -1;
    }
    if (++nestedDepth > Py_GetRecursionLimit()) {
        nestedDepth--;
        Py_LeaveRecursiveCall();
        PyErr_Format(PyExc_RecursionError,
                     "maximum recursion depth exceeded%s", where);
        return -1;
    }
    return 0;
}

static void
leaveNested(void)
{
    nestedDepth--;
    Py_LeaveRecursiveCall();
}

/* Banana type bytes. */
#define B_LIST 0x80
#define B_INT 0x81
#define B_STRING 0x82
#define B_NEG 0x83
#define B_FLOAT 0x84
#define B_LONGINT 0x85
#define B_LONGNEG 0x86
#define B_VOCAB 0x87

/* Configuration set once by configure(). */
static PyObject *FramingError = NULL;   /* pbext.codec.FramingError */
static PyObject *BananaError = NULL;    /* twisted.spread.banana.BananaError */
static PyObject *plainFunc = NULL;      /* pbext.codec._plain */
static PyObject *intTokenFunc = NULL;   /* pbext.codec._intToken */
static PyObject *NotPlain = NULL;       /* pbext._jelly.NOT_PLAIN */
static PyObject *Prebuilt = NULL;       /* pbext._jelly.PREBUILT */
static PyObject *VersionKey = NULL;     /* pbext.copyable.VERSION_KEY */
static Py_ssize_t sizeLimit = 640 * 1024;

/* Interned jelly tags and words. */
static PyObject *s_unicode, *s_None, *s_boolean, *s_true, *s_false;
static PyObject *s_dictionary, *s_list, *s_tuple, *s_set, *s_frozenset;
static PyObject *s_reference, *s_dereference;
/* Interned names read for classic copies (see pbext._classiccopies). */
static PyObject *s___dict__, *s_unjellyableRegistry;

/* Returned (not a new reference) when an object is not plain. */
static PyObject notPlainMarker;
#define NOT_PLAIN_C (&notPlainMarker)

/* What a walk or a decoder last found of a classic copy class (see
 * classicHolds): that the class, as its version tag says it was, passes
 * spec's checks, and (receiving) that the keys in keys pass the state
 * check.  CPython gives a class a new version tag whenever it or a base
 * changes, so a class whose tag is unchanged still passes; a tag of 0
 * (none assigned) is never trusted. */
typedef struct {
    PyTypeObject *type;     /* compared with the tag only, never used */
    unsigned int tag;
    PyObject *spec;         /* held */
    PyObject *keys;         /* held: a tuple, or NULL */
} ClassicCache;

/* An identity set of the containers (and typed objects) already
 * jellied, with the rest of one walk's context: the send specs of the
 * registered classes it writes (a dict class -> spec, or NULL), and
 * whether it is jellying decoded values back (see jellyBack). */
typedef struct {
    void **slots;
    Py_ssize_t mask, used;
    PyObject *types;
    int wrap;
    /* checkPlain: how many more values it may look at before it answers
     * 2 (too many to tell). */
    Py_ssize_t budget;
    /* The class sendSpecOf last looked up and its spec (both held), or
     * NULL: a value usually holds many objects of one class. */
    PyObject *lastClass, *lastSpec;
    /* How many containers and registered objects enclose the value being
     * walked (see enterLevel). */
    int depth;
    ClassicCache classic;
} Seen;

/*
 * The walks over application values (jellyNode, writeJelly, checkPlain
 * and their typed twins) read a registered object's fields with
 * PyObject_GetAttr, which may run any Python code (a property, or a
 * collection the allocation of a list sets off): code that may change or
 * drop any container being walked.  So they hold a strong reference to
 * every list item, dictionary key and value they use, take a list's
 * length afresh before each item, and fail with a RuntimeError where a
 * container changed while it was walked, as the Python twin does; see
 * the encoder's contract in docs/architecture.rst.
 */

/* How deep containers and registered objects may nest in a plain value:
 * deeper, the plain paths step aside, at the same depth in C and in
 * Python (pbext._jelly._PLAIN_MAX_NESTING) whatever the stack holds. */
#define PLAIN_MAX_NESTING 200

/* Enter one more level of a plain walk: 1 if entered (leave it with
 * leaveLevel), 0 if it is too deep to be plain, -1 on error (a
 * RecursionError where the stack is nearly full). */
static inline int
enterLevel(Seen *seen, const char *where)
{
    if (seen->depth >= PLAIN_MAX_NESTING && !seen->wrap) {
        return 0;
    }
    if (Py_EnterRecursiveCall(where)) {
        return -1;
    }
    seen->depth++;
    return 1;
}

static inline void
leaveLevel(Seen *seen)
{
    seen->depth--;
    Py_LeaveRecursiveCall();
}

/* The error for a container that changed while a walk wrote or checked
 * it (what is "list", "set", ...); returns -1. */
static int
changedDuringWalk(const char *what)
{
    PyErr_Format(PyExc_RuntimeError, "%s changed size during serialization",
                 what);
    return -1;
}

/* A walk over a dict's entries that fails as Python's own dict iterator
 * fails (the Python twin iterates with it) when the dict changes, and
 * when it visits fewer entries than the dict held at the start. */
typedef struct {
    PyObject *dict;
    Py_ssize_t pos, size, left;
} DictWalk;

static inline void
dictWalkStart(DictWalk *walk, PyObject *dict)
{
    walk->dict = dict;
    walk->pos = 0;
    walk->size = walk->left = PyDict_GET_SIZE(dict);
}

/* The error of a dict's iterator (message) for a dict changed while it
 * was walked; returns -1. */
static int
dictChanged(const char *message)
{
    PyErr_SetString(PyExc_RuntimeError, message);
    return -1;
}

/* The next entry (new references): 1, or 0 after the last, or -1 with a
 * RuntimeError if the dict changed. */
static inline int
dictWalkNext(DictWalk *walk, PyObject **key, PyObject **value)
{
    if (PyDict_GET_SIZE(walk->dict) != walk->size) {
        return dictChanged("dictionary changed size during iteration");
    }
    if (!PyDict_Next(walk->dict, &walk->pos, key, value)) {
        return walk->left == 0 ? 0 : changedDuringWalk("dictionary");
    }
    if (walk->left == 0) {
        return dictChanged("dictionary keys changed during iteration");
    }
    walk->left--;
    Py_INCREF(*key);
    Py_INCREF(*value);
    return 1;
}

static int
seenAdd(Seen *seen, void *pointer)
{
    /* Returns 1 if already there, 0 if added, -1 on error. */
    if ((seen->used + 1) * 2 > seen->mask + 1) {
        Py_ssize_t size = (seen->mask + 1) * 2;
        void **slots = PyMem_Calloc(size, sizeof(void *));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i <= seen->mask; i++) {
            void *p = seen->slots[i];
            if (p != NULL) {
                size_t h = ((size_t)p >> 4) & (size - 1);
                while (slots[h] != NULL) {
                    h = (h + 1) & (size - 1);
                }
                slots[h] = p;
            }
        }
        PyMem_Free(seen->slots);
        seen->slots = slots;
        seen->mask = size - 1;
    }
    size_t h = ((size_t)pointer >> 4) & seen->mask;
    while (seen->slots[h] != NULL) {
        if (seen->slots[h] == pointer) {
            return 1;
        }
        h = (h + 1) & seen->mask;
    }
    seen->slots[h] = pointer;
    seen->used++;
    return 0;
}

/* An empty identity set, freed with seenRelease. */
static int
seenInit(Seen *seen)
{
    seen->mask = 15;
    seen->used = 0;
    seen->types = NULL;
    seen->wrap = 0;
    seen->budget = PY_SSIZE_T_MAX;
    seen->lastClass = NULL;
    seen->lastSpec = NULL;
    seen->depth = 0;
    seen->classic.type = NULL;
    seen->classic.tag = 0;
    seen->classic.spec = NULL;
    seen->classic.keys = NULL;
    seen->slots = PyMem_Calloc(16, sizeof(void *));
    if (seen->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Free what seenInit and sendSpecOf made. */
static void
seenRelease(Seen *seen)
{
    PyMem_Free(seen->slots);
    seen->slots = NULL;
    Py_CLEAR(seen->lastClass);
    Py_CLEAR(seen->lastSpec);
    Py_CLEAR(seen->classic.spec);
    Py_CLEAR(seen->classic.keys);
}

static inline int
isWord(PyObject *obj, PyObject *word)
{
    if (obj == word) {
        return 1;
    }
    if (Py_TYPE(obj) != &PyBytes_Type) {
        return 0;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(word);
    return PyBytes_GET_SIZE(obj) == n &&
           memcmp(PyBytes_AS_STRING(obj), PyBytes_AS_STRING(word), n) == 0;
}

/* See the Jellied section below. */
typedef struct {
    PyObject_HEAD
    PyObject *value;
    PyObject *types;    /* send specs, or NULL */
} Jellied;

/*
 * Registered types on the plain paths.  pbext._jelly.PlainTypes hands
 * over two tables built from a connection's copyable registries (see
 * pbext.copyable.SendSpec and ReceiveSpec):
 *
 *   send     class -> (wireName, ((attribute, key), ...), version)
 *   receive  wireName -> (build, byKeyword, fields, required, version)
 *            with fields: name -> (checkKind, checker, required)
 *
 * An object of a class in the send table is written as its registry's
 * _TypedEntry.jelly would; a [wireName, state] expression whose name is
 * in the receive table is built when the state passes every check, as
 * pbext._jelly._buildTyped does, and is left to the full unjellier (which
 * repeats the work and reports the refusal) when it does not.
 */
#define CHECK_ANY 0
#define CHECK_INT 1
#define CHECK_STR 2
#define CHECK_FLOAT 3
#define CHECK_BYTES 4
#define CHECK_BOOL 5
/* The most constructor parameters passed by position. */
#define MAX_POSITIONAL 32

/* The send spec of obj's class, or NULL with no error; a new reference
 * (the spec is used while fields are read, which may run code). */
static inline PyObject *
sendSpecOf(Seen *seen, PyObject *obj)
{
    if (seen->types == NULL) {
        return NULL;
    }
    PyObject *cls = (PyObject *)Py_TYPE(obj);
    if (cls == seen->lastClass) {
        Py_INCREF(seen->lastSpec);
        return seen->lastSpec;
    }
    PyObject *spec = PyDict_GetItemWithError(seen->types, cls);
    if (spec == NULL) {
        return NULL;
    }
    if (!PyTuple_CheckExact(spec) ||
        (PyTuple_GET_SIZE(spec) != 3 && PyTuple_GET_SIZE(spec) != 2) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(spec, 0)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, 1)) ||
        (PyTuple_GET_SIZE(spec) == 3 &&
         !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 2)))) {
        PyErr_SetString(PyExc_TypeError, "malformed send spec");
        return NULL;
    }
    Py_INCREF(cls);
    Py_XSETREF(seen->lastClass, cls);
    Py_INCREF(spec);
    Py_XSETREF(seen->lastSpec, spec);
    Py_INCREF(spec);
    return spec;
}

/* The attribute name and key of field i of a send spec, borrowed. */
static inline int
specField(PyObject *spec, Py_ssize_t i, PyObject **name, PyObject **key)
{
    PyObject *field = PyTuple_GET_ITEM(PyTuple_GET_ITEM(spec, 1), i);
    if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2 ||
        !PyUnicode_CheckExact(PyTuple_GET_ITEM(field, 0)) ||
        !PyBytes_CheckExact(PyTuple_GET_ITEM(field, 1))) {
        PyErr_SetString(PyExc_TypeError, "malformed send spec");
        return -1;
    }
    *name = PyTuple_GET_ITEM(field, 0);
    *key = PyTuple_GET_ITEM(field, 1);
    return 0;
}

/* A field's value read for the plain path: a new reference, or
 * NOT_PLAIN_C if reading it fails (the registry then reports the error),
 * or NULL on an error that is not an Exception. */
static PyObject *
readField(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
        return NOT_PLAIN_C;
    }
    return value;
}

/* The value of field i of obj, as its send spec names it (a new
 * reference), with the field's attribute name and key (borrowed);
 * NOT_PLAIN_C if reading it fails; NULL on error. */
static PyObject *
typedField(PyObject *obj, PyObject *spec, Py_ssize_t i, PyObject **name,
           PyObject **key)
{
    if (specField(spec, i, name, key) < 0) {
        return NULL;
    }
    return readField(obj, *name);
}

/* Whether a spec's version (a Python int) is above 1. */
static inline int
versioned(PyObject *version)
{
    return PyLong_AsLong(version) != 1;
}

/*
 * Classic copies (pbext._classiccopies): a send spec (wireName, checks)
 * writes a pb.Copyable's __dict__ as its state; a receive spec (cls,
 * namespace, tag, checks, mode, fields) builds a pb.RemoteCopy from a
 * state whose keys pass the copy-state check.  checks are (name, value)
 * pairs: what the class's MRO must still give for each name (None for
 * nothing), read again for every object.
 */
#define CLASSIC_UNCHECKED 0
static int stepAside(void);
#define CLASSIC_FIELDS 2

/* The version tag of a class that has a valid one, else 0. */
static inline unsigned int
versionTag(PyTypeObject *type)
{
#ifdef Py_TPFLAGS_VALID_VERSION_TAG
    if (!(type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        return 0;
    }
#endif
    return type->tp_version_tag;
}

/* Whether cache says type passed spec's checks, unchanged since. */
static inline int
classicKnown(ClassicCache *cache, PyTypeObject *type, PyObject *spec)
{
    unsigned int tag;
    return cache != NULL && cache->spec == spec && cache->type == type &&
           (tag = versionTag(type)) != 0 && cache->tag == tag;
}

/* Remember in cache that type passes spec's checks (its keys, if any, to
 * be remembered apart). */
static void
classicRemember(ClassicCache *cache, PyTypeObject *type, PyObject *spec)
{
    if (cache == NULL) {
        return;
    }
    if (cache->spec != spec || cache->type != type) {
        Py_CLEAR(cache->keys);
    }
    Py_INCREF(spec);
    Py_XSETREF(cache->spec, spec);
    cache->type = type;
    cache->tag = versionTag(type);
}

/* Whether type still gives what checks recorded: 1, 0, or -1. */
static int
classicHolds(PyTypeObject *type, PyObject *checks)
{
    if (!PyTuple_CheckExact(checks)) {
        PyErr_SetString(PyExc_TypeError, "malformed classic spec");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(checks); i++) {
        PyObject *check = PyTuple_GET_ITEM(checks, i);
        if (!PyTuple_CheckExact(check) || PyTuple_GET_SIZE(check) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(check, 0))) {
            PyErr_SetString(PyExc_TypeError, "malformed classic spec");
            return -1;
        }
        /* A cached lookup in the MRO's dictionaries: no code runs. */
        PyObject *found = _PyType_Lookup(type, PyTuple_GET_ITEM(check, 0));
        if ((found == NULL ? Py_None : found) != PyTuple_GET_ITEM(check, 1)) {
            return 0;
        }
    }
    return 1;
}

/* The state a classic send spec writes for obj, its __dict__ (a new
 * reference); NOT_PLAIN_C if its class no longer passes the spec's
 * checks or it has no dictionary; NULL on error. */
static PyObject *
classicState(PyObject *obj, PyObject *spec, ClassicCache *cache)
{
    PyTypeObject *type = Py_TYPE(obj);
    if (!classicKnown(cache, type, spec)) {
        int holds = classicHolds(type, PyTuple_GET_ITEM(spec, 1));
        if (holds <= 0) {
            return holds < 0 ? NULL : NOT_PLAIN_C;
        }
        classicRemember(cache, type, spec);
    }
    PyObject *state = PyObject_GenericGetDict(obj, NULL);
    if (state == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
        return NOT_PLAIN_C;
    }
    if (!PyDict_CheckExact(state)) {
        Py_DECREF(state);
        return NOT_PLAIN_C;
    }
    return state;
}

/* Whether key passes the copy-state check outright for type under mode
 * (not CLASSIC_UNCHECKED): 1, 0 (the full unjellier decides), or -1. */
static int
classicKeyPasses(PyTypeObject *type, PyObject *key, long mode,
                 PyObject *fields)
{
    if (!PyUnicode_CheckExact(key) || !PyUnicode_IsIdentifier(key)) {
        return 0;
    }
    if (PyUnicode_GET_LENGTH(key) >= 2 &&
        PyUnicode_READ_CHAR(key, 0) == '_' &&
        PyUnicode_READ_CHAR(key, 1) == '_') {
        return 0;
    }
    if (mode == CLASSIC_FIELDS) {
        int declared = PyAnySet_Check(fields) ? PySet_Contains(fields, key)
                                              : 0;
        if (declared <= 0) {
            return declared;
        }
    }
    /* Nothing in the class as it is now may have the key's name. */
    return _PyType_Lookup(type, key) == NULL;
}

/* Whether every key of state passes the copy-state check outright for
 * type under mode: 1, 0 (the full unjellier decides), or -1. */
static int
classicKeysPass(PyTypeObject *type, PyObject *state, long mode,
                PyObject *fields)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(state, &pos, &key, &value)) {
        if (mode == CLASSIC_UNCHECKED) {
            /* Bytes keys (a Python 2 peer's) are decoded by
             * setCopyableState: left to it. */
            if (!PyUnicode_CheckExact(key)) {
                return 0;
            }
            continue;
        }
        int ok = classicKeyPasses(type, key, mode, fields);
        if (ok <= 0) {
            return ok;
        }
    }
    return 1;
}

/* The most keys of a state remembered in a ClassicCache. */
#define CLASSIC_KEYS 32

/* Whether key and known are equal texts (known a str). */
static inline int
sameKey(PyObject *key, PyObject *known)
{
    /* The decoder does not always reuse a key's str. */
    return key == known ||
           (PyUnicode_CheckExact(key) &&
            PyUnicode_GET_LENGTH(key) == PyUnicode_GET_LENGTH(known) &&
            PyUnicode_KIND(key) == PyUnicode_KIND(known) &&
            memcmp(PyUnicode_DATA(key), PyUnicode_DATA(known),
                   (size_t)(PyUnicode_GET_LENGTH(key) *
                            PyUnicode_KIND(key))) == 0);
}

/* Whether state's keys are keys, equal texts in the same order. */
static int
sameKeys(PyObject *state, PyObject *keys)
{
    if (keys == NULL || PyTuple_GET_SIZE(keys) != PyDict_GET_SIZE(state)) {
        return 0;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(state, &pos, &key, &value)) {
        if (!sameKey(key, PyTuple_GET_ITEM(keys, i++))) {
            return 0;
        }
    }
    return 1;
}

/* Remember state's keys (as passing the state check) in cache. */
static int
rememberKeys(ClassicCache *cache, PyObject *state)
{
    Py_ssize_t n = PyDict_GET_SIZE(state);
    if (cache == NULL || n > CLASSIC_KEYS) {
        return 0;
    }
    PyObject *keys = PyTuple_New(n);
    if (keys == NULL) {
        return -1;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (PyDict_Next(state, &pos, &key, &value)) {
        Py_INCREF(key);
        PyTuple_SET_ITEM(keys, i++, key);
    }
    Py_XSETREF(cache->keys, keys);
    return 0;
}

/* Whether spec is a well-formed classic receive spec whose class is still
 * the one registered for its tag, in Twisted's registry as it is now
 * (tests and applications may replace it): 1, 0, or -1. */
static int
classicRegistered(PyObject *spec)
{
    if (PyTuple_GET_SIZE(spec) != 6 ||
        !PyType_Check(PyTuple_GET_ITEM(spec, 0)) ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(spec, 1)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 4))) {
        PyErr_SetString(PyExc_TypeError, "malformed classic spec");
        return -1;
    }
    PyObject *registry = PyDict_GetItemWithError(PyTuple_GET_ITEM(spec, 1),
                                                 s_unjellyableRegistry);
    if (registry == NULL || !PyDict_CheckExact(registry)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *registered = PyDict_GetItemWithError(registry,
                                                   PyTuple_GET_ITEM(spec, 2));
    if (registered != PyTuple_GET_ITEM(spec, 0)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return 1;
}

/* Whether strs a peer sent may be interned (made the very object that
 * names an attribute or a field, found by identity).  Not on CPython
 * 3.12, whose interned strs live as long as the process: there a peer's
 * keys must not outlive the values that hold them, or a peer sending
 * ever new keys would grow the process without bound. */
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
#define INTERN_PEER_STRS 0
#else
#define INTERN_PEER_STRS 1
#endif

/* Set a checked key (a str) of a classic copy as object.__setattr__
 * does, interned as setattr() interns a name (and as the decoder interns
 * the short keys it reads), where INTERN_PEER_STRS: the class's instances
 * share a key table that keeps the first copy's keys, and a key that is
 * the very object it holds is found there by identity, not compared by
 * text. */
static int
setCopyAttribute(PyObject *instance, PyObject *key, PyObject *value)
{
#if !INTERN_PEER_STRS
    return PyObject_GenericSetAttr(instance, key, value);
#else
    if (PyUnicode_CHECK_INTERNED(key)) {
        return PyObject_GenericSetAttr(instance, key, value);
    }
    Py_INCREF(key);
    PyUnicode_InternInPlace(&key);
    int rc = PyObject_GenericSetAttr(instance, key, value);
    Py_DECREF(key);
    return rc;
#endif
}

/*
 * A new instance of type with a classic copy's state, as
 * RemoteCopy.unjellyFor makes it (object.__new__ and object.__setattr__,
 * as spec's checks found them): the state is the dict state, or the n
 * keys and values.  Where spec checks keys, none names anything of the
 * class (see classicKeyPasses), so they are set one by one as
 * object.__setattr__ sets them, which keeps them as CPython keeps any
 * instance's attributes (sharing the class's key table: an instance made
 * and then given a __dict__ would use up that table's room).  Unchecked
 * keys may name anything (__class__ ...): as setCopyableState does, the
 * state becomes its __dict__.  A new reference, NOT_PLAIN_C on an
 * Exception, NULL on another error.
 */
static PyObject *
classicInstance(PyTypeObject *type, PyObject *spec, PyObject *state,
                PyObject **keys, PyObject **values, Py_ssize_t n)
{
    long mode = PyLong_AsLong(PyTuple_GET_ITEM(spec, 4));
    if (mode == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *noArguments = PyTuple_New(0);
    if (noArguments == NULL) {
        return NULL;
    }
    PyObject *instance = PyBaseObject_Type.tp_new(type, noArguments, NULL);
    Py_DECREF(noArguments);
    if (instance != NULL && mode == CLASSIC_UNCHECKED) {
        PyObject *made = NULL;
        if (state == NULL) {
            state = made = PyDict_New();
            for (Py_ssize_t i = 0; state != NULL && i < n; i++) {
                if (PyDict_SetItem(state, keys[i], values[i]) < 0) {
                    Py_CLEAR(made);
                    state = NULL;
                }
            }
        }
        if (state == NULL ||
            PyObject_SetAttr(instance, s___dict__, state) < 0) {
            Py_CLEAR(instance);
        }
        Py_XDECREF(made);
    }
    else if (instance != NULL && state != NULL) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(state, &pos, &key, &value)) {
            /* Held: nothing runs that could change state, but a key's
             * hash is read while the instance takes it. */
            Py_INCREF(key);
            Py_INCREF(value);
            int rc = setCopyAttribute(instance, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                Py_CLEAR(instance);
                break;
            }
        }
    }
    else {
        for (Py_ssize_t i = 0; instance != NULL && i < n; i++) {
            if (setCopyAttribute(instance, keys[i], values[i]) < 0) {
                Py_CLEAR(instance);
            }
        }
    }
    if (instance == NULL) {
        return stepAside() ? NOT_PLAIN_C : NULL;
    }
    return instance;
}

/* A classic copy built from state as RemoteCopy.unjellyFor would (see
 * pbext._classiccopies.buildClassic): a new reference, NOT_PLAIN_C where
 * the full unjellier must decide, NULL on error.  Runs none of the
 * class's own code.  cache (or NULL) saves checking a class again while
 * it is unchanged, and the keys of the copy before again. */
static PyObject *
buildClassic(PyObject *spec, PyObject *state, ClassicCache *cache)
{
    int ok = classicRegistered(spec);
    if (ok <= 0) {
        return ok < 0 ? NULL : NOT_PLAIN_C;
    }
    PyTypeObject *type = (PyTypeObject *)PyTuple_GET_ITEM(spec, 0);
    if (!PyDict_CheckExact(state)) {
        return NOT_PLAIN_C;
    }
    int known = classicKnown(cache, type, spec);
    ok = known ? 1 : classicHolds(type, PyTuple_GET_ITEM(spec, 3));
    if (ok > 0 && !(known && sameKeys(state, cache->keys))) {
        long mode = PyLong_AsLong(PyTuple_GET_ITEM(spec, 4));
        if (mode == -1 && PyErr_Occurred()) {
            return NULL;
        }
        ok = classicKeysPass(type, state, mode, PyTuple_GET_ITEM(spec, 5));
        if (ok > 0 && cache != NULL) {
            /* Read the tag after the lookups, which may assign one. */
            classicRemember(cache, type, spec);
            if (rememberKeys(cache, state) < 0) {
                return NULL;
            }
        }
    }
    if (ok <= 0) {
        return ok < 0 ? NULL : NOT_PLAIN_C;
    }
    return classicInstance(type, spec, state, NULL, NULL, 0);
}

static int
checkConfigured(void)
{
    if (FramingError == NULL || BananaError == NULL || plainFunc == NULL ||
        intTokenFunc == NULL || NotPlain == NULL || Prebuilt == NULL ||
        VersionKey == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pbext._speedups is not configured");
        return -1;
    }
    return 0;
}

/*
 * A new list for an s-expression, of size elements that are NULL until
 * set.  It is an ordinary list, tracked by the garbage collector like any
 * other: the caller sets every element before any Python code can run
 * (which could find the list through the collector and read a NULL).
 */
static PyObject *
newList(Py_ssize_t size)
{
    return PyList_New(size);
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

/* Strings longer than this are pieces of their own in encodePieces, and
 * are received in place by a decoder (see startLongString). */
#define LONG_STRING (64 * 1024)

/* The size of the encoder's filter of vocabulary words, in bits (a power
 * of two). */
#define WORD_FILTER_BITS 1024

typedef struct {
    PyObject *bytes;      /* the output, grown with _PyBytes_Resize */
    char *data;
    Py_ssize_t size;      /* bytes written */
    /* encodePieces: the pieces before bytes (NULL for encode), and their
     * total size. */
    PyObject *pieces;
    Py_ssize_t flushed;
    Py_ssize_t capacity;
    Py_ssize_t limit;     /* most bytes allowed */
    PyObject *vocabulary; /* dict bytes -> int, or NULL */
    Py_ssize_t longestWord; /* -1 until computed */
    int maxNesting;
    /* The encodings of jelly's words, made on first use (see tagToken). */
    unsigned char tagBytes[10][16];
    signed char tagLength[10];
    /* A quick filter of the vocabulary's words, made on first use: their
     * length, first and last bytes, as bits of a small Bloom filter
     * (see mayBeWord); everyText if some word is empty or 64 bytes long
     * or more, so that every text is looked up. */
    int filterReady;
    int everyText;
    unsigned char wordBits[WORD_FILTER_BITS / 8];
    /* The bytes of the last registered type written (see typedBytes):
     * its send spec, its header and each field's key, one after the
     * other, and where each starts (typedFields + 2 offsets). */
    PyObject *typedSpec;
    PyObject *typedBytes;
    Py_ssize_t *typedOffsets;
    Py_ssize_t typedFields;
    /* For a classic copy's spec (see classicBytes), the keys of the
     * state they were made for, a tuple of strs; else NULL. */
    PyObject *typedKeys;
    /* encode: a large plain value is written in pieces all the same (see
     * writeJelly), joined once at the end; pieces is made on the first. */
    int joinPieces;
} Encoder;

static int
encoderReserve(Encoder *e, Py_ssize_t more)
{
    Py_ssize_t needed = e->size + more;
    if (needed <= e->capacity) {
        return 0;
    }
    Py_ssize_t capacity = e->capacity * 2;
    if (capacity < needed) {
        capacity = needed + 64;
    }
    if (_PyBytes_Resize(&e->bytes, capacity) < 0) {
        return -1;
    }
    e->data = PyBytes_AS_STRING(e->bytes);
    e->capacity = capacity;
    return 0;
}

/* Write a banana number prefix (base 128, least significant first; zero
 * is one zero byte) and a type byte. */
/* Write a token's prefix and type byte at out (which has room for 11
 * bytes); return where they end. */
static inline char *
putToken(char *out, uint64_t number, unsigned char typeByte)
{
    if (number == 0) {
        *out++ = 0;
    }
    while (number) {
        *out++ = (char)(number & 0x7f);
        number >>= 7;
    }
    *out++ = (char)typeByte;
    return out;
}

static int
writeToken(Encoder *e, uint64_t number, unsigned char typeByte)
{
    if (encoderReserve(e, 11) < 0) {
        return -1;
    }
    e->size = putToken(e->data + e->size, number, typeByte) - e->data;
    return 0;
}

static int
writeRaw(Encoder *e, const char *bytes, Py_ssize_t size)
{
    if (encoderReserve(e, size) < 0) {
        return -1;
    }
    memcpy(e->data + e->size, bytes, size);
    e->size += size;
    return 0;
}

static int
tooLarge(Encoder *e)
{
    PyObject *message = PyUnicode_FromFormat(
        "message to send is longer than %zd bytes", e->limit);
    if (message == NULL) {
        return -1;
    }
    PyObject *exc = PyObject_CallFunction(FramingError, "sO",
                                          "maxMessageBytes", message);
    Py_DECREF(message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}

static inline int
checkRoom(Encoder *e)
{
    if (e->flushed + e->size > e->limit) {
        return tooLarge(e);
    }
    return 0;
}

/* End the piece being written (if it holds anything) and start another. */
static int flushPieceTo(Encoder *e, Py_ssize_t capacity);

static int
flushPiece(Encoder *e)
{
    return flushPieceTo(e, 256);
}

/* Plain values written in pieces (encodePieces, encodeIfPlain) are cut
 * into pieces of about this size, between two containers: each is memory
 * the allocator hands out again for the next message, where one piece of
 * a large value's size would grow by copies into fresh pages every time
 * (see writeJelly). */
#define PLAIN_PIECE (64 * 1024)
#define PLAIN_PIECE_CUT (PLAIN_PIECE - 8 * 1024)

/* flushPiece, the next piece made with room for capacity bytes. */
static int
flushPieceTo(Encoder *e, Py_ssize_t capacity)
{
    if (e->size == 0) {
        return 0;
    }
    if (_PyBytes_Resize(&e->bytes, e->size) < 0) {
        return -1;
    }
    int rc = PyList_Append(e->pieces, e->bytes);
    Py_CLEAR(e->bytes);
    if (rc < 0) {
        return -1;
    }
    e->flushed += e->size;
    e->size = 0;
    e->capacity = capacity;
    e->bytes = PyBytes_FromStringAndSize(NULL, e->capacity);
    if (e->bytes == NULL) {
        return -1;
    }
    e->data = PyBytes_AS_STRING(e->bytes);
    return 0;
}

/* The longest word of the vocabulary: longer strings need no lookup. */
static Py_ssize_t
longestWord(Encoder *e)
{
    if (e->longestWord < 0) {
        Py_ssize_t pos = 0, longest = 0;
        PyObject *key, *value;
        while (PyDict_Next(e->vocabulary, &pos, &key, &value)) {
            Py_ssize_t n = PyObject_Length(key);
            if (n < 0) {
                PyErr_Clear();
                n = PY_SSIZE_T_MAX;
            }
            if (n > longest) {
                longest = n;
            }
        }
        e->longestWord = longest;
    }
    return e->longestWord;
}

/* Encode a byte string (exact bytes): a vocabulary token or a string. */
static int
encodeBytes(Encoder *e, PyObject *item)
{
    Py_ssize_t size = PyBytes_GET_SIZE(item);
    if (e->vocabulary != NULL && (size <= 256 || size <= longestWord(e))) {
        PyObject *word = PyDict_GetItemWithError(e->vocabulary, item);
        if (word != NULL) {
            Py_ssize_t number = PyLong_AsSsize_t(word);
            if (number == -1 && PyErr_Occurred()) {
                return -1;
            }
            if (number < 0) {
                PyErr_SetString(PyExc_ValueError,
                                "negative vocabulary number");
                return -1;
            }
            if (writeToken(e, (uint64_t)number, B_VOCAB) < 0) {
                return -1;
            }
            return checkRoom(e);
        }
        if (PyErr_Occurred()) {
            return -1;
        }
    }
    if (size > sizeLimit) {
        PyErr_Format(BananaError, "byte string is too long to send (%zd)",
                     size);
        return -1;
    }
    if (writeToken(e, (uint64_t)size, B_STRING) < 0) {
        return -1;
    }
    if (e->flushed + e->size + size > e->limit) {
        return tooLarge(e);
    }
    if (e->pieces != NULL && size > LONG_STRING) {
        /* A piece of its own: not copied. */
        if (flushPiece(e) < 0 || PyList_Append(e->pieces, item) < 0) {
            return -1;
        }
        e->flushed += size;
        return 0;
    }
    return writeRaw(e, PyBytes_AS_STRING(item), size);
}

/* Encode an exact int. */
static int
encodeInt(Encoder *e, PyObject *item)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow == 0) {
        int rc;
        if (value < 0) {
            uint64_t magnitude = (uint64_t)0 - (uint64_t)value;
            rc = writeToken(e, magnitude,
                            value >= -2147483648LL ? B_NEG : B_LONGNEG);
        }
        else {
            rc = writeToken(e, (uint64_t)value,
                            value <= 2147483647LL ? B_INT : B_LONGINT);
        }
        if (rc < 0) {
            return -1;
        }
        return checkRoom(e);
    }
    /* Beyond 64 bits: the Python twin knows the range rules. */
    PyObject *token = PyObject_CallOneArg(intTokenFunc, item);
    if (token == NULL) {
        return -1;
    }
    if (!PyBytes_Check(token)) {
        Py_DECREF(token);
        PyErr_SetString(PyExc_TypeError, "_intToken did not return bytes");
        return -1;
    }
    int rc = writeRaw(e, PyBytes_AS_STRING(token), PyBytes_GET_SIZE(token));
    Py_DECREF(token);
    if (rc < 0) {
        return -1;
    }
    return checkRoom(e);
}

static int
encodeFloat(Encoder *e, PyObject *item)
{
    double value = PyFloat_AS_DOUBLE(item);
    uint64_t bits;
    memcpy(&bits, &value, 8);
    if (encoderReserve(e, 9) < 0) {
        return -1;
    }
    unsigned char *out = (unsigned char *)e->data + e->size;
    out[0] = B_FLOAT;
    for (int i = 0; i < 8; i++) {
        out[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    e->size += 9;
    return checkRoom(e);
}

static int encodeJellied(Encoder *e, PyObject *item);
static PyTypeObject JelliedType;
static int writeEncoded(Encoder *e, PyObject *item);
static PyTypeObject EncodedType;

/* A list or tuple being encoded by encodeItem, or the plain equivalent
 * of an object of a subclass (size -1), held. */
typedef struct {
    PyObject *sequence;
    Py_ssize_t next;    /* the index of its next item */
    Py_ssize_t size;    /* its length when its header was written */
} Level;

/* How many levels encodeItem keeps on the C stack before it takes room
 * on the heap. */
#define ENCODE_LEVELS 32

/*
 * Encode item as banana.  The walk keeps its lists on a stack of its
 * own, not the C stack, so that it nests exactly as deep as the Python
 * twin (Python's recursion limit) without ever running out of C stack.
 * Writing an item may run Python code (a subclass's conversion, a
 * Jellied value's registered objects), so each item is held while it is
 * written, a list's length is read afresh before each item, and a list
 * whose length no longer matches its header fails the encoding.
 */
static int
encodeItem(Encoder *e, PyObject *item)
{
    Level small[ENCODE_LEVELS];
    Level *stack = small;
    Py_ssize_t capacity = ENCODE_LEVELS, depth = 0;
    int rc = -1;
    Py_INCREF(item);
    for (;;) {
        /* Write item (a new reference), or open it as a level. */
        PyTypeObject *kind = Py_TYPE(item);
        PyObject *open = NULL;
        Py_ssize_t size = -1;
        int written = 0;
        if (kind == &PyBytes_Type) {
            written = encodeBytes(e, item);
        }
        else if (kind == &PyLong_Type) {
            written = encodeInt(e, item);
        }
        else if (kind == &PyFloat_Type) {
            written = encodeFloat(e, item);
        }
        else if (kind == &PyList_Type || kind == &PyTuple_Type) {
            size = PySequence_Fast_GET_SIZE(item);
            if (size > sizeLimit) {
                PyErr_Format(BananaError,
                             "list/tuple is too long to send (%zd)", size);
                written = -1;
            }
            else if (writeToken(e, (uint64_t)size, B_LIST) < 0) {
                written = -1;
            }
            else if (size == 0) {
                written = checkRoom(e);
            }
            /* The header is checked against the limit with the first
             * scalar. */
            else if (depth >= e->maxNesting) {
                PyErr_SetString(PyExc_RecursionError,
                                "lists nested too deeply to encode with "
                                "banana");
                written = -1;
            }
            else {
                open = item;
                Py_INCREF(open);
            }
        }
        else if (kind == &JelliedType) {
            written = encodeJellied(e, item);
        }
        else if (kind == &EncodedType) {
            written = writeEncoded(e, item);
        }
        else {
            /* A subclass (bool, say): its plain equivalent, one level
             * deeper, as the Python twin does. */
            open = PyObject_CallOneArg(plainFunc, item);
            if (open == NULL) {
                written = -1;
            }
        }
        Py_DECREF(item);
        item = NULL;
        if (written < 0) {
            goto out;
        }
        if (open != NULL) {
            if (depth == capacity) {
                Level *more = PyMem_Malloc(2 * capacity * sizeof(Level));
                if (more == NULL) {
                    Py_DECREF(open);
                    PyErr_NoMemory();
                    goto out;
                }
                memcpy(more, stack, depth * sizeof(Level));
                if (stack != small) {
                    PyMem_Free(stack);
                }
                stack = more;
                capacity *= 2;
            }
            stack[depth].sequence = open;
            stack[depth].next = 0;
            stack[depth].size = size;
            depth++;
        }
        /* The next item: the innermost level's next, closing the levels
         * done. */
        while (item == NULL) {
            if (depth == 0) {
                rc = 0;
                goto out;
            }
            Level *level = &stack[depth - 1];
            if (level->size < 0) {
                if (level->next == 0) {
                    level->next = 1;
                    item = level->sequence;
                    Py_INCREF(item);
                    break;
                }
            }
            else if (level->next <
                     PySequence_Fast_GET_SIZE(level->sequence)) {
                item = PySequence_Fast_GET_ITEM(level->sequence,
                                                level->next);
                Py_INCREF(item);
                level->next++;
                break;
            }
            else if (level->next != level->size ||
                     PySequence_Fast_GET_SIZE(level->sequence) !=
                         level->size) {
                changedDuringWalk("list");
                goto out;
            }
            depth--;
            Py_DECREF(level->sequence);
        }
    }
out:
    while (depth > 0) {
        depth--;
        Py_DECREF(stack[depth].sequence);
    }
    if (stack != small) {
        PyMem_Free(stack);
    }
    return rc;
}

PyDoc_STRVAR(encode_doc,
"encode(obj, vocabulary=None, maxMessageBytes=None) -> bytes\n\n"
"The accelerated pbext.codec.encode: the same arguments, the same bytes\n"
"and the same errors.");

PyDoc_STRVAR(encodePieces_doc,
"encodePieces(obj, vocabulary=None, maxMessageBytes=None) -> list\n\n"
"The accelerated pbext.codec.encodePieces: the same arguments, the same\n"
"pieces and the same errors; but a plain value it writes itself (a\n"
"Jellied's) is cut into pieces of about 64 KiB, and the long pieces of\n"
"an Encoded are pieces of their own, the very objects.");

/* Set up an encoder for one message: its vocabulary (a mapping, or None)
 * and its limit (an int, or None for none); pieces says whether it makes
 * pieces (encodePieces) or one byte string (encode). */
static int
encoderStart(Encoder *e, PyObject *vocabulary, PyObject *limitObject,
             int pieces)
{
    if (checkConfigured() < 0) {
        return -1;
    }
    e->limit = PY_SSIZE_T_MAX;
    if (limitObject != Py_None) {
        e->limit = PyLong_AsSsize_t(limitObject);
        if (e->limit == -1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                return -1;
            }
            PyErr_Clear();
            e->limit = PY_SSIZE_T_MAX;
        }
    }
    e->vocabulary = NULL;
    if (vocabulary != Py_None) {
        if (!PyDict_Check(vocabulary)) {
            /* A mapping of another type: a plain dict copy behaves the
             * same for lookups of exact bytes. */
            e->vocabulary = PyDict_New();
            if (e->vocabulary == NULL ||
                PyDict_Update(e->vocabulary, vocabulary) < 0) {
                Py_XDECREF(e->vocabulary);
                return -1;
            }
        }
        else {
            Py_INCREF(vocabulary);
            e->vocabulary = vocabulary;
        }
    }
    e->longestWord = -1;
    memset(e->tagLength, -1, sizeof(e->tagLength));
    e->filterReady = 0;
    e->typedSpec = NULL;
    e->typedBytes = NULL;
    e->typedOffsets = NULL;
    e->typedFields = 0;
    e->typedKeys = NULL;
    /* Python's recursion limit, as the Python twin (encodeItem keeps its
     * levels on the heap). */
    e->maxNesting = Py_GetRecursionLimit();
    e->capacity = 256;
    e->size = 0;
    e->flushed = 0;
    e->pieces = NULL;
    e->joinPieces = !pieces;
    if (pieces) {
        e->pieces = PyList_New(0);
        if (e->pieces == NULL) {
            Py_XDECREF(e->vocabulary);
            return -1;
        }
    }
    e->bytes = PyBytes_FromStringAndSize(NULL, e->capacity);
    if (e->bytes == NULL) {
        Py_XDECREF(e->vocabulary);
        Py_XDECREF(e->pieces);
        return -1;
    }
    e->data = PyBytes_AS_STRING(e->bytes);
    return 0;
}

/* The pieces of an encode joined in one byte string (the list is
 * released). */
static PyObject *
joinedPieces(Encoder *e)
{
    PyObject *pieces = e->pieces;
    PyObject *joined = PyBytes_FromStringAndSize(NULL, e->flushed);
    if (joined != NULL) {
        char *out = PyBytes_AS_STRING(joined);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pieces); i++) {
            PyObject *piece = PyList_GET_ITEM(pieces, i);
            memcpy(out, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece));
            out += PyBytes_GET_SIZE(piece);
        }
    }
    Py_DECREF(pieces);
    return joined;
}

/* End an encoder set up by encoderStart, rc being what writing its
 * message returned: the bytes (or the list of pieces), or NULL on error. */
static PyObject *
encoderFinish(Encoder *e, int rc)
{
    Py_XDECREF(e->vocabulary);
    Py_XDECREF(e->typedSpec);
    Py_XDECREF(e->typedBytes);
    Py_XDECREF(e->typedKeys);
    PyMem_Free(e->typedOffsets);
    if (rc == 0 && e->pieces != NULL) {
        rc = flushPiece(e);
    }
    if (rc < 0) {
        Py_XDECREF(e->bytes);
        Py_XDECREF(e->pieces);
        return NULL;
    }
    if (e->pieces != NULL) {
        Py_DECREF(e->bytes);
        return e->joinPieces ? joinedPieces(e) : e->pieces;
    }
    if (_PyBytes_Resize(&e->bytes, e->size) < 0) {
        return NULL;
    }
    return e->bytes;
}

/* encode, or encodePieces when pieces is true. */
static PyObject *
runEncoder(PyObject *args, PyObject *kwargs, int pieces)
{
    static char *keywords[] = {"obj", "vocabulary", "maxMessageBytes", NULL};
    PyObject *obj, *vocabulary = Py_None, *limitObject = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:encode", keywords,
                                     &obj, &vocabulary, &limitObject)) {
        return NULL;
    }
    Encoder e;
    if (encoderStart(&e, vocabulary, limitObject, pieces) < 0) {
        return NULL;
    }
    return encoderFinish(&e, encodeItem(&e, obj));
}

static PyObject *
speedups_encode(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    return runEncoder(args, kwargs, 0);
}

static PyObject *
speedups_encodePieces(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    return runEncoder(args, kwargs, 1);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

/* The most fields of a type whose copies the decoder reads straight from
 * the bytes (see quickTyped). */
#define QUICK_FIELDS 64

/* The most bytes of the fixed parts of a copy (its keys, and the tokens
 * around them) the decoder keeps to compare the next copies with. */
#define QUICK_FIXED_BYTES 2048

/* How the decoder reads the copies of one registered type straight from
 * the bytes: made from its receive spec on first use in a message. */
typedef struct QuickTemplate {
    PyObject *spec;         /* the receive spec it was made from */
    int usable;             /* whether its copies can be read this way */
    PyTypeObject *cls;      /* borrowed from spec: the class built */
    PyObject *names;        /* borrowed from spec: the fields, in order */
    Py_ssize_t n;
    const char *keys[QUICK_FIELDS];   /* their UTF-8, owned by the names */
    Py_ssize_t keySizes[QUICK_FIELDS];
    unsigned char kinds[QUICK_FIELDS];  /* CHECK_* */
    /* The bytes of a copy but for its tag and values, as last read field
     * by field (see quickTyped): the segment before value k starts at
     * fixed + starts[k] and ends at starts[k + 1].  Bytes equal to them
     * parse as they did (a template lasts one message, in which the
     * vocabulary and limits do not change), so the next copies are read
     * with one comparison per field.  fixedFields is 0 while there are
     * none (or they are too long to keep). */
    Py_ssize_t fixedFields;
    Py_ssize_t starts[QUICK_FIELDS + 1];
    unsigned char fixed[QUICK_FIXED_BYTES];
} QuickTemplate;

/* How the decoder reads a classic class's copies straight from the bytes
 * (see quickClassic). */
typedef struct ClassicTemplate {
    PyObject *spec;         /* the receive spec it was made for (held) */
    /* The keys of the last copy read whole (held), in order, and
     * whether its fixed bytes are kept, as in QuickTemplate: the segment
     * before value k starts at fixed + starts[k] and ends at
     * starts[k + 1]. */
    Py_ssize_t n;
    int fixedKept;
    PyObject *keys[QUICK_FIELDS];
    /* Each value's kind (see quickValueHead): the fixed segment before
     * value k ends where its own bytes start (a str's after its list
     * header and b"unicode", a None's after all of it); and the lists'
     * declared elements of the copy read whole. */
    unsigned char kinds[QUICK_FIELDS];
    Py_ssize_t lists;
    Py_ssize_t starts[QUICK_FIELDS + 1];
    unsigned char fixed[QUICK_FIXED_BYTES];
} ClassicTemplate;

/* Forget the keys a classic template keeps. */
static void
classicTemplateClear(ClassicTemplate *t)
{
    for (Py_ssize_t i = 0; i < t->n; i++) {
        Py_CLEAR(t->keys[i]);
    }
    t->n = 0;
    t->fixedKept = 0;
}


#define KEY_CACHE_SIZE 64
#define KEY_CACHE_LONGEST 32
#define SPARE_PAIRS 32

typedef struct {
    PyObject_HEAD
    Py_ssize_t maxPrefix, maxString, maxList, maxDepth, maxTokens,
        maxMessageBytes;
    PyObject *vocabulary;   /* dict int -> bytes, or NULL */
    /* Bytes held: at most one incomplete token and what follows it. */
    PyObject *chunks;       /* list of bytes, or NULL when nothing is held */
    Py_ssize_t have, need;
    /* The declared length of the string whose header starts the held
     * bytes (0 if they hold no string's header). */
    Py_ssize_t longSize;
    /* A long string being received in place (see startLongString): the
     * bytes object of its final size, just made and seen by nothing but
     * this decoder until it is complete, filled (by memcpy, here) up to
     * its last longSize - (need - have) bytes; chunks is NULL meanwhile. */
    PyObject *longString;
    /* The receive buffer last handed out for longString, or NULL; and the
     * bytearray its bytes are received into (see receiveBuffer), kept
     * while longString is. */
    PyObject *offered;
    PyObject *stage;
    /* Bytes receiveFrom has written into longString past its first
     * longSize - (need - have), not yet counted by bufferFilled (0 when
     * none are: anything else fed or asked for drops them). */
    Py_ssize_t placed;
    /* The lists being filled, outermost first, with declared lengths. */
    PyObject **lists;
    Py_ssize_t *wants;      /* declared lengths */
    Py_ssize_t *filled;     /* elements received */
    unsigned char *roles;   /* in plain-jelly mode: see ROLE_* */
    unsigned char *dicts;   /* in plain-jelly mode: see NODE_* */
    Py_ssize_t depth, stackCapacity;
    int plainJelly;
    PyObject *plainTypes;   /* receive specs by wire name, or NULL */
    PyObject *lastTag, *lastSpec;   /* the last one found in plainTypes */
    struct QuickTemplate *quick;    /* how to read lastSpec's copies fast */
    ClassicCache classic;           /* see buildClassic */
    struct ClassicTemplate *classicQuick; /* see quickClassic */
    /* The classic receive spec last found registered in Twisted's
     * registry during this message (held), or NULL: not looked up again
     * for each copy.  Forgotten when a message is complete and whenever
     * the decoder is fed (Python code runs between), so that a change of
     * the registry takes effect on the next message at the latest. */
    PyObject *classicRegisteredSpec;
    /* Plain-jelly mode: recently decoded short dictionary keys, reused
     * (keys repeat from one dictionary to the next), and emptied
     * two-element lists kept for the next dictionary's pairs. */
    PyObject **keys;        /* KEY_CACHE_SIZE slots, made on first use */
    PyObject **spare;       /* SPARE_PAIRS slots, made on first use */
    int spareCount;
    Py_ssize_t tokens, messageBytes;
    PyObject *failure;      /* (limit, message) once failed, or NULL */
    int busy;
} DecoderCore;

static Py_ssize_t
limitArgument(PyObject *value, const char *name)
{
    Py_ssize_t n = PyLong_AsSsize_t(value);
    if (n == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return -1;
        }
        PyErr_Clear();
        return PY_SSIZE_T_MAX;
    }
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s must be a positive integer",
                     name);
        return -1;
    }
    return n;
}

static int
DecoderCore_init(DecoderCore *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"maxPrefixBytes", "maxStringBytes",
                               "maxListLength", "maxDepth",
                               "maxMessageTokens", "maxMessageBytes", NULL};
    PyObject *values[6];
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO:DecoderCore",
                                     keywords, &values[0], &values[1],
                                     &values[2], &values[3], &values[4],
                                     &values[5])) {
        return -1;
    }
    Py_ssize_t *targets[6] = {&self->maxPrefix, &self->maxString,
                              &self->maxList, &self->maxDepth,
                              &self->maxTokens, &self->maxMessageBytes};
    for (int i = 0; i < 6; i++) {
        Py_ssize_t n = limitArgument(values[i], keywords[i]);
        if (n < 0) {
            return -1;
        }
        *targets[i] = n;
    }
    if (checkConfigured() < 0) {
        return -1;
    }
    self->tokens = 1;
    return 0;
}

static int
DecoderCore_traverse(DecoderCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->vocabulary);
    Py_VISIT(self->plainTypes);
    Py_VISIT(self->lastTag);
    Py_VISIT(self->lastSpec);
    if (self->quick != NULL) {
        Py_VISIT(self->quick->spec);
    }
    if (self->classicQuick != NULL) {
        Py_VISIT(self->classicQuick->spec);
    }
    Py_VISIT(self->classic.spec);
    Py_VISIT(self->classic.keys);
    Py_VISIT(self->classicRegisteredSpec);
    Py_VISIT(self->chunks);
    Py_VISIT(self->longString);
    Py_VISIT(self->stage);
    Py_VISIT(self->offered);
    Py_VISIT(self->failure);
    /* The lists being filled hold a placeholder (None) in every slot not
     * filled yet (see openList), so showing them is safe. */
    for (Py_ssize_t i = 0; i < self->depth; i++) {
        Py_VISIT(self->lists[i]);
    }
    if (self->spare != NULL) {
        for (int i = 0; i < self->spareCount; i++) {
            Py_VISIT(self->spare[i]);
        }
    }
    return 0;
}

static void
clearStack(DecoderCore *self)
{
    Py_ssize_t depth = self->depth;
    self->depth = 0;
    for (Py_ssize_t i = 0; i < depth; i++) {
        Py_CLEAR(self->lists[i]);
    }
}

/* Drop the key cache, the spare pair lists, the quick template and what
 * is known of a classic class: they serve one message, and an idle
 * connection keeps none of them. */
static void
releaseCaches(DecoderCore *self)
{
    Py_CLEAR(self->classic.spec);
    Py_CLEAR(self->classic.keys);
    self->classic.type = NULL;
    Py_CLEAR(self->classicRegisteredSpec);
    if (self->quick != NULL) {
        Py_CLEAR(self->quick->spec);
        PyMem_Free(self->quick);
        self->quick = NULL;
    }
    if (self->classicQuick != NULL) {
        classicTemplateClear(self->classicQuick);
        Py_CLEAR(self->classicQuick->spec);
        PyMem_Free(self->classicQuick);
        self->classicQuick = NULL;
    }
    if (self->keys != NULL) {
        for (int i = 0; i < KEY_CACHE_SIZE; i++) {
            Py_CLEAR(self->keys[i]);
        }
        PyMem_Free(self->keys);
        self->keys = NULL;
    }
    if (self->spare != NULL) {
        while (self->spareCount > 0) {
            self->spareCount--;
            Py_CLEAR(self->spare[self->spareCount]);
        }
        PyMem_Free(self->spare);
        self->spare = NULL;
    }
}

static int
DecoderCore_clear(DecoderCore *self)
{
    Py_CLEAR(self->vocabulary);
    Py_CLEAR(self->plainTypes);
    Py_CLEAR(self->lastTag);
    Py_CLEAR(self->lastSpec);
    Py_CLEAR(self->chunks);
    Py_CLEAR(self->longString);
    Py_CLEAR(self->stage);
    Py_CLEAR(self->offered);
    Py_CLEAR(self->failure);
    clearStack(self);
    releaseCaches(self);
    return 0;
}

static void
DecoderCore_dealloc(DecoderCore *self)
{
    PyObject_GC_UnTrack(self);
    DecoderCore_clear(self);
    PyMem_Free(self->lists);
    PyMem_Free(self->wants);
    PyMem_Free(self->filled);
    PyMem_Free(self->roles);
    PyMem_Free(self->dicts);

    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Record the failure, and raise FramingError(limit, message). */
static void
failWith(DecoderCore *self, const char *limit, PyObject *message)
{
    if (message == NULL) {
        return;
    }
    PyObject *failure = Py_BuildValue("(sO)", limit, message);
    Py_DECREF(message);
    if (failure == NULL) {
        return;
    }
    Py_XSETREF(self->failure, failure);
    PyObject *exc = PyObject_CallObject(FramingError, failure);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static void
tooLong(DecoderCore *self)
{
    failWith(self, "maxMessageBytes",
             PyUnicode_FromFormat("message of more than %zd bytes",
                                  self->maxMessageBytes));
}

/* The number of a prefix of more than 8 bytes, as a Python int. */
static PyObject *
bigNumber(const unsigned char *prefix, Py_ssize_t length)
{
    PyObject *number = PyLong_FromLong(0);
    for (Py_ssize_t i = length - 1; i >= 0 && number != NULL; i--) {
        PyObject *seven = PyLong_FromLong(7);
        PyObject *shifted = seven ? PyNumber_Lshift(number, seven) : NULL;
        Py_XDECREF(seven);
        Py_DECREF(number);
        if (shifted == NULL) {
            return NULL;
        }
        PyObject *digit = PyLong_FromLong(prefix[i]);
        number = digit ? PyNumber_Or(shifted, digit) : NULL;
        Py_XDECREF(digit);
        Py_DECREF(shifted);
    }
    return number;
}

/*
 * Plain-jelly mode (setPlainJelly): the lists inside a message that are
 * jelly expressions of plain values (what unjellyPlain would turn into
 * values) are turned into those values as they complete, and a message's
 * element that is such a value is delivered as Jellied(value); anything
 * else stays an s-expression, for the full unjellier.  Each open list has
 * a role: the message itself; a jelly expression (VALUE) whose first
 * element is its tag; a dictionary's [key, value] pair (PAIR); or RAW, an
 * s-expression that is not plain.  A list that turns out not to be plain
 * turns every enclosing VALUE and PAIR list RAW, and the values already
 * made in them are jellied back (to expressions the full unjellier turns
 * into equal values).
 */
/* What a VALUE list is, once its tag is known (the dicts array). */
#define NODE_OTHER 0
#define NODE_DICTIONARY 1
#define NODE_TYPED 2   /* [wireName, state] of a registered type */
#define ROLE_MESSAGE 0
#define ROLE_VALUE 1
#define ROLE_PAIR 2
#define ROLE_RAW 3
/* Deeper than this, lists are left to the full unjellier. */
#define PLAIN_MAX_DEPTH 200

static PyObject *jellyBack(PyObject *value);
static PyObject *jellyNode(PyObject *obj, Seen *seen);
static PyObject *jellyTree(PyObject *obj, PyObject *types);
static PyObject *convertNode(PyObject *list);
static PyObject *buildTyped(PyObject *spec, PyObject *state, int directOnly);
static PyObject *buildDirectly(PyTypeObject *cls, PyObject *names,
                               PyObject **values, Py_ssize_t n);
static int stepAside(void);
static PyTypeObject JelliedType;

static int
pushList(DecoderCore *self, PyObject *list, Py_ssize_t want)
{
    if (self->depth == self->stackCapacity) {
        /* Eight levels hold a PB call and its arguments: the stack of an
         * idle connection costs 208 bytes, and deeper values double it. */
        Py_ssize_t capacity = self->stackCapacity ? self->stackCapacity * 2 : 8;
        PyObject **lists = PyMem_Realloc(self->lists,
                                         capacity * sizeof(PyObject *));
        if (lists == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->lists = lists;
        Py_ssize_t *wants = PyMem_Realloc(self->wants,
                                          capacity * sizeof(Py_ssize_t));
        if (wants == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->wants = wants;
        Py_ssize_t *filled = PyMem_Realloc(self->filled,
                                           capacity * sizeof(Py_ssize_t));
        if (filled == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->filled = filled;
        unsigned char *roles = PyMem_Realloc(self->roles, capacity);
        if (roles == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->roles = roles;
        unsigned char *dicts = PyMem_Realloc(self->dicts, capacity);
        if (dicts == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->dicts = dicts;
        self->stackCapacity = capacity;
    }
    self->lists[self->depth] = list;
    self->wants[self->depth] = want;
    self->filled[self->depth] = 0;
    self->roles[self->depth] = ROLE_RAW;
    self->dicts[self->depth] = 0;
    self->depth++;
    return 0;
}


/*
 * A list the parser fills element by element: of size slots, each None
 * until the parser sets it (with setSlot).  Python code runs while it is
 * being filled (the constructors and checkers of registered types, the
 * callback of feedTo), and the list is tracked by the garbage collector
 * like any other, so it is never left with an empty (NULL) slot that
 * such code could find through the collector.
 */
static PyObject *
openList(Py_ssize_t size)
{
    PyObject *list = PyList_New(size);
    if (list != NULL) {
        for (Py_ssize_t i = 0; i < size; i++) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(list, i, Py_None);
        }
    }
    return list;
}

/* Set slot i of a list (a placeholder or a value), stealing item. */
static inline void
setSlot(PyObject *list, Py_ssize_t i, PyObject *item)
{
    PyObject *old = PyList_GET_ITEM(list, i);
    PyList_SET_ITEM(list, i, item);
    Py_XDECREF(old);
}

/* Jellied(value), stealing value. */
static PyObject *
wrapJellied(PyObject *value)
{
    Jellied *wrapper = PyObject_GC_New(Jellied, &JelliedType);
    if (wrapper == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    wrapper->value = value;
    wrapper->types = NULL;
    PyObject_GC_Track(wrapper);
    return (PyObject *)wrapper;
}

/* Jelly back the values already made in the first n elements of a VALUE
 * list that proved not plain (in the [key, value] pair lists of a
 * dictionary's if pairs), so that the full unjellier reads it as the
 * expression it was. */
static int
jellyBackElements(PyObject *list, Py_ssize_t n, int pairs)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *element = PyList_GET_ITEM(list, i);
        if (pairs && i > 0 && Py_TYPE(element) == &PyList_Type) {
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(element); j++) {
                PyObject *back = jellyBack(PyList_GET_ITEM(element, j));
                if (back == NULL) {
                    return -1;
                }
                setSlot(element, j, back);
            }
            continue;
        }
        PyObject *back = jellyBack(element);
        if (back == NULL) {
            return -1;
        }
        setSlot(list, i, back);
    }
    return 0;
}

/* Turn the open VALUE and PAIR lists from level up RAW, jellying back the
 * values already made in them. */
static int
makeRaw(DecoderCore *self, Py_ssize_t level)
{
    for (Py_ssize_t l = level; l >= 1; l--) {
        unsigned char role = self->roles[l];
        if (role == ROLE_RAW || role == ROLE_MESSAGE) {
            break;
        }
        int pairs = role == ROLE_VALUE && self->dicts[l] == NODE_DICTIONARY;
        if (jellyBackElements(self->lists[l], self->filled[l], pairs) < 0) {
            return -1;
        }
        self->roles[l] = ROLE_RAW;
    }
    return 0;
}

/* The role of the list just opened (at the top of the stack). */
static int
assignRole(DecoderCore *self)
{
    Py_ssize_t d = self->depth - 1;
    unsigned char role;
    if (d == 0) {
        role = ROLE_MESSAGE;
    }
    else {
        unsigned char parent = self->roles[d - 1];
        if (parent == ROLE_RAW) {
            role = ROLE_RAW;
        }
        else if (parent == ROLE_VALUE) {
            if (self->filled[d - 1] == 0) {
                /* A list as a tag: the parent is not plain. */
                if (makeRaw(self, d - 1) < 0) {
                    return -1;
                }
                role = ROLE_RAW;
            }
            else {
                role = self->dicts[d - 1] == NODE_DICTIONARY ? ROLE_PAIR
                                                              : ROLE_VALUE;
            }
        }
        else {
            role = ROLE_VALUE;
        }
        if (d > PLAIN_MAX_DEPTH) {
            role = ROLE_RAW;
        }
    }
    self->roles[d] = role;
    self->dicts[d] = 0;
    return 0;
}

/* Which plain tag a word is: 1 for b"dictionary", 0 for another plain
 * tag, -1 if it is none. */
static int
plainTag(PyObject *word)
{
    if (Py_TYPE(word) != &PyBytes_Type) {
        return -1;
    }
    PyObject *tags[] = {s_unicode, s_None, s_boolean, s_list, s_tuple,
                        s_set, s_frozenset};
    if (isWord(word, s_dictionary)) {
        return 1;
    }
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
        if (isWord(word, tags[i])) {
            return 0;
        }
    }
    return -1;
}

/* The receive spec of a registered type's tag (borrowed), or NULL (with
 * an error set, or not); a list of copies of one type looks it up once. */
static PyObject *
typedSpec(DecoderCore *self, PyObject *tag)
{
    if (self->plainTypes == NULL || Py_TYPE(tag) != &PyBytes_Type) {
        return NULL;
    }
    PyObject *last = self->lastTag;
    if (last != NULL && (last == tag || isWord(tag, last))) {
        return self->lastSpec;
    }
    PyObject *spec = PyDict_GetItemWithError(self->plainTypes, tag);
    if (spec != NULL) {
        Py_INCREF(tag);
        Py_XSETREF(self->lastTag, tag);
        Py_INCREF(spec);
        Py_XSETREF(self->lastSpec, spec);
    }
    return spec;
}

/* Before item goes into the list at level top: a list that is not plain
 * or a tag that is not plain's turns the list RAW. */
static int
placeCheck(DecoderCore *self, Py_ssize_t top, PyObject *item, int rawItem)
{
    unsigned char role = self->roles[top];
    if (role != ROLE_VALUE && role != ROLE_PAIR) {
        return 0;
    }
    if (rawItem) {
        return makeRaw(self, top);
    }
    if (role == ROLE_VALUE && self->filled[top] == 0) {
        int tag = plainTag(item);
        if (tag < 0 && self->plainTypes != NULL) {
            /* Only types built without running any of their own code:
             * the decoder builds them before the broker has decided
             * whether the message is refused. */
            PyObject *spec = typedSpec(self, item);
            if (spec != NULL && PyTuple_CheckExact(spec) &&
                ((PyTuple_GET_SIZE(spec) == 7 &&
                  PyTuple_GET_ITEM(spec, 6) == Py_True) ||
                 PyTuple_GET_SIZE(spec) == 6)) {
                tag = NODE_TYPED;
            }
            else if (PyErr_Occurred()) {
                return -1;
            }
        }
        if (tag < 0) {
            return makeRaw(self, top);
        }
        self->dicts[top] = (unsigned char)tag;
    }
    return 0;
}

/* The list at level top is complete (and *item is it): make it a value if
 * it is a plain VALUE, wrapped in Jellied in a message.  Returns 1 if it
 * stays a list that is not plain, 0 if not, -1 on error. */
static int
completed(DecoderCore *self, Py_ssize_t top, PyObject **item)
{
    unsigned char role = self->roles[top];
    if (role == ROLE_PAIR) {
        return PyList_GET_SIZE(*item) == 2 ? 0 : 1;
    }
    if (role != ROLE_VALUE) {
        return 1;
    }
    int node = self->dicts[top];
    PyObject *value;
    if (node == NODE_TYPED) {
        PyObject *list = *item;
        PyObject *spec = NULL;
        if (PyList_GET_SIZE(list) == 2 &&
            PyDict_CheckExact(PyList_GET_ITEM(list, 1))) {
            spec = typedSpec(self, PyList_GET_ITEM(list, 0));
        }
        if (spec != NULL) {
            Py_INCREF(spec);
            value = PyTuple_CheckExact(spec) && PyTuple_GET_SIZE(spec) == 6
                        ? buildClassic(spec, PyList_GET_ITEM(list, 1),
                                       &self->classic)
                        : buildTyped(spec, PyList_GET_ITEM(list, 1), 1);
            Py_DECREF(spec);
        }
        else {
            value = PyErr_Occurred() ? NULL : NOT_PLAIN_C;
        }
    }
    else {
        value = convertNode(*item);
    }
    if (value == NULL) {
        return -1;
    }
    if (value == NOT_PLAIN_C) {
        /* Left to the full unjellier, which needs the values made in it
         * as expressions (it may upgrade a registered type's state, or
         * must refuse it, or a set of unhashable values). */
        if (jellyBackElements(*item, PyList_GET_SIZE(*item),
                              node == NODE_DICTIONARY) < 0) {
            return -1;
        }
        return 1;
    }
    if (node == NODE_DICTIONARY && PyList_GET_SIZE(*item) > 1 &&
        self->spare == NULL) {
        self->spare = PyMem_Calloc(SPARE_PAIRS, sizeof(PyObject *));
        if (self->spare == NULL) {
            Py_DECREF(value);
            PyErr_NoMemory();
            return -1;
        }
    }
    if (node == NODE_DICTIONARY && self->spare != NULL) {
        /* Keep the pair lists this dictionary no longer needs. */
        PyObject *node = *item;
        for (Py_ssize_t i = 1; i < PyList_GET_SIZE(node); i++) {
            PyObject *pair = PyList_GET_ITEM(node, i);
            if (self->spareCount == SPARE_PAIRS) {
                break;
            }
            if (Py_REFCNT(pair) != 1 || PyList_GET_SIZE(pair) != 2) {
                continue;
            }
            Py_INCREF(Py_None);
            setSlot(pair, 0, Py_None);
            Py_INCREF(Py_None);
            setSlot(pair, 1, Py_None);
            Py_INCREF(pair);
            self->spare[self->spareCount++] = pair;
        }
    }
    if (self->roles[top - 1] == ROLE_MESSAGE) {
        value = wrapJellied(value);
        if (value == NULL) {
            return -1;
        }
    }
    Py_SETREF(*item, value);
    return 0;
}


/* The str of UTF-8 bytes, as PyUnicode_DecodeUTF8 makes it; short ASCII
 * text (the commonest) is copied straight into a new str. */
static PyObject *
textFromUTF8(const char *bytes, Py_ssize_t size)
{
    if (size >= 2 && size <= 256) {
        unsigned char high = 0;
        for (Py_ssize_t i = 0; i < size; i++) {
            high |= (unsigned char)bytes[i];
        }
        if (high < 0x80) {
            PyObject *text = PyUnicode_New(size, 127);
            if (text != NULL) {
                memcpy(PyUnicode_DATA(text), bytes, size);
            }
            return text;
        }
    }
    return PyUnicode_DecodeUTF8(bytes, size, NULL);
}

/* The str of a short dictionary key, from the key cache when it holds
 * the same ASCII text (strs are immutable: sharing one is safe). */
static PyObject *
cachedKey(DecoderCore *self, const char *bytes, Py_ssize_t size)
{
    if (self->keys == NULL) {
        self->keys = PyMem_Calloc(KEY_CACHE_SIZE, sizeof(PyObject *));
        if (self->keys == NULL) {
            return PyErr_NoMemory();
        }
    }
    uint32_t h = 2166136261u;
    for (Py_ssize_t i = 0; i < size; i++) {
        h = (h ^ (unsigned char)bytes[i]) * 16777619u;
    }
    PyObject **slot = &self->keys[h % KEY_CACHE_SIZE];
    PyObject *cached = *slot;
    if (cached != NULL && PyUnicode_GET_LENGTH(cached) == size &&
        memcmp(PyUnicode_DATA(cached), bytes, size) == 0) {
        Py_INCREF(cached);
        return cached;
    }
    PyObject *text = PyUnicode_DecodeUTF8(bytes, size, NULL);
    if (text != NULL && PyUnicode_IS_ASCII(text)) {
#if INTERN_PEER_STRS
        /* Interned, a key is the very object that names the field of a
         * registered type (or a keyword parameter): looked up by
         * identity.  (Not on CPython 3.12: see INTERN_PEER_STRS.) */
        PyUnicode_InternInPlace(&text);
#endif
        Py_INCREF(text);
        Py_XSETREF(*slot, text);
    }
    return text;
}

/* The jelly words of a str: [b"unicode", ...] is "\x02\x80" then these. */
static const char UNICODE_WORD[] = "\x07\x82unicode";

static inline int quickToken(DecoderCore *self, const unsigned char *data,
                             Py_ssize_t *p, Py_ssize_t limit,
                             unsigned int *typ, uint64_t *num);

/*
 * The contents of a two-element list whose header was just read, at
 * data[pos]: if they are b"unicode" and a UTF-8 string wholly in the bytes
 * at hand (before stringLimit, and within the limits), return the str
 * (from the key cache if key and it is short) and set *after past it.
 * Otherwise return NULL, with no error set (or with one on a real error,
 * such as memory running out).
 */
static PyObject *
quickTextBody(DecoderCore *self, const unsigned char *data, Py_ssize_t pos,
              Py_ssize_t stringLimit, int key, Py_ssize_t *after)
{
    /* The tag is a string of seven bytes, which the parser would refuse
     * under a lower maxStringBytes. */
    if (stringLimit - pos < 11 || self->maxString < 7 ||
        memcmp(data + pos, UNICODE_WORD, 9) != 0) {
        return NULL;
    }
    Py_ssize_t p = pos + 9;
    unsigned int typ;
    uint64_t number;
    if (!quickToken(self, data, &p, stringLimit, &typ, &number) ||
        typ != B_STRING || number > (uint64_t)self->maxString ||
        (Py_ssize_t)number > stringLimit - p) {
        return NULL;
    }
    PyObject *text;
    if (key && number <= KEY_CACHE_LONGEST) {
        text = cachedKey(self, (const char *)data + p, (Py_ssize_t)number);
    }
    else {
        text = textFromUTF8((const char *)data + p, (Py_ssize_t)number);
    }
    if (text == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
        }
        return NULL;
    }
    *after = p + (Py_ssize_t)number;
    return text;
}

/*
 * In plain-jelly mode, at a two-element list header (already checked
 * against the limits) at data[pos]: if the list is a VALUE whose tag is
 * b"unicode" and whose UTF-8 string is wholly in the bytes at hand (and
 * within stringLimit and the limits), return the str (wrapped in Jellied
 * in a message) and set *after past it.  Otherwise return NULL, with no
 * error set, and the list is parsed the usual way.
 */
static PyObject *
quickText(DecoderCore *self, const unsigned char *data, Py_ssize_t pos,
          Py_ssize_t stringLimit, Py_ssize_t *after)
{
    Py_ssize_t d = self->depth; /* the level this list would have */
    unsigned char parent = self->roles[d - 1];
    int value = parent == ROLE_MESSAGE || parent == ROLE_PAIR ||
                (parent == ROLE_VALUE && self->filled[d - 1] > 0 &&
                 self->dicts[d - 1] != NODE_DICTIONARY);
    if (!value || d > PLAIN_MAX_DEPTH) {
        return NULL;
    }
    PyObject *text = quickTextBody(
        self, data, pos, stringLimit,
        parent == ROLE_PAIR && self->filled[d - 1] == 0, after);
    if (text != NULL && parent == ROLE_MESSAGE) {
        return wrapJellied(text);
    }
    return text;
}

/*
 * An int token at data[pos] (INT or NEG, its prefix short and wholly
 * before stringLimit): the int, with *after set past it; otherwise NULL,
 * with no error set (or with one on a real error).
 */
static PyObject *
quickInt(DecoderCore *self, const unsigned char *data, Py_ssize_t pos,
         Py_ssize_t stringLimit, Py_ssize_t *after)
{
    Py_ssize_t p = pos;
    unsigned int typ;
    uint64_t number;
    if (!quickToken(self, data, &p, stringLimit, &typ, &number) ||
        (typ != B_INT && typ != B_NEG)) {
        return NULL;
    }
    PyObject *value = PyLong_FromUnsignedLongLong(number);
    if (value != NULL && typ == B_NEG) {
        Py_SETREF(value, PyNumber_Negative(value));
    }
    if (value != NULL) {
        *after = p;
    }
    return value;
}

/*
 * In plain-jelly mode, at a two-element list header (already checked
 * against the limits) at data[pos] whose list is a dictionary's [key,
 * value] pair: if the key is a text and the value a text or an int, each
 * in its canonical tokens and wholly in the bytes at hand, return the pair
 * as the parser would have made it, set *after past it and count its
 * texts' lists in *tokens.  Otherwise return NULL, with no error set (or
 * with one on a real error), and the pair is parsed the usual way; so
 * every limit the parser would check on the texts' lists is checked here
 * first.
 */
static PyObject *
quickPair(DecoderCore *self, const unsigned char *data, Py_ssize_t pos,
          Py_ssize_t stringLimit, Py_ssize_t *tokens, Py_ssize_t *after)
{
    Py_ssize_t d = self->depth; /* the level the pair would have */
    if (self->roles[d - 1] != ROLE_VALUE ||
        self->dicts[d - 1] != NODE_DICTIONARY || self->filled[d - 1] == 0) {
        return NULL;
    }
    /* The texts' lists are one level deeper, of two elements each. */
    if (d + 1 > PLAIN_MAX_DEPTH || d + 1 >= self->maxDepth ||
        self->maxList < 2 || self->maxTokens - *tokens < 4) {
        return NULL;
    }
    if (stringLimit - pos < 2 || data[pos] != 2 || data[pos + 1] != B_LIST) {
        return NULL;
    }
    Py_ssize_t p;
    PyObject *key = quickTextBody(self, data, pos + 2, stringLimit, 1, &p);
    if (key == NULL) {
        return NULL;
    }
    PyObject *value;
    Py_ssize_t lists = 1;
    if (stringLimit - p >= 2 && data[p] == 2 && data[p + 1] == B_LIST) {
        value = quickTextBody(self, data, p + 2, stringLimit, 0, &p);
        lists = 2;
    }
    else {
        value = quickInt(self, data, p, stringLimit, &p);
    }
    if (value == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *pair;
    if (self->spareCount > 0) {
        pair = self->spare[--self->spareCount];
    }
    else {
        pair = openList(2);
        if (pair == NULL) {
            Py_DECREF(key);
            Py_DECREF(value);
            return NULL;
        }
    }
    setSlot(pair, 0, key);
    setSlot(pair, 1, value);
    *tokens += 2 * lists;
    *after = p;
    return pair;
}

/*
 * Reading a registered type's copy straight from the bytes.
 *
 * The commonest copy is a dataclass whose fields hold ints, strs, floats,
 * bytes or bools, sent as pbext and classic PB both write it:
 *
 *   [wireName, [b"dictionary", [[b"unicode", key], value], ...]]
 *
 * quickTyped reads such a copy when all of its bytes are at hand, and
 * builds it as completed() would build it from the lists, without making
 * them.  It reads nothing but what the general parser would accept with
 * the same result: anything else (another shape, a key that is not a
 * field, one sent twice, a value its field refuses, bytes still to come,
 * a limit reached) makes it give up, having changed nothing, and the
 * general parser reads the same bytes again from the start, building the
 * copy or leaving it to the full unjellier (and raising any limit's
 * error) as it always does.
 */

/* The template for spec: self->quick, remade if it was made for another
 * spec; NULL (with no error set) if the type's copies are not read
 * quickly, or with an error set. */
static QuickTemplate *
quickTemplate(DecoderCore *self, PyObject *spec)
{
    QuickTemplate *t = self->quick;
    if (t != NULL && t->spec == spec) {
        return t->usable ? t : NULL;
    }
    if (t == NULL) {
        t = PyMem_Malloc(sizeof(QuickTemplate));
        if (t == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        t->spec = NULL;
        self->quick = t;
    }
    Py_INCREF(spec);
    Py_XSETREF(t->spec, spec);
    t->usable = 0;
    t->fixedFields = 0;
    /* As buildTyped's direct path: a class built without running its own
     * code, by keyword, every field a constructor parameter, unversioned. */
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 7 ||
        PyTuple_GET_ITEM(spec, 6) != Py_True ||
        !PyType_Check(PyTuple_GET_ITEM(spec, 0)) ||
        PyTuple_GET_ITEM(spec, 1) != Py_True ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(spec, 2)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 3)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 4)) ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(spec, 5))) {
        return NULL;
    }
    PyObject *fields = PyTuple_GET_ITEM(spec, 2);
    PyObject *names = PyTuple_GET_ITEM(spec, 5);
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > QUICK_FIELDS || n > MAX_POSITIONAL ||
        n != PyDict_GET_SIZE(fields) ||
        versioned(PyTuple_GET_ITEM(spec, 4))) {
        return NULL;
    }
    Py_ssize_t required = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 3));
    if (required == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t present = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (!PyUnicode_CheckExact(name)) {
            return NULL;
        }
        PyObject *field = PyDict_GetItemWithError(fields, name);
        if (field == NULL) {
            return NULL;
        }
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 3 ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(field, 0))) {
            return NULL;
        }
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 0));
        if (kind != CHECK_INT && kind != CHECK_STR && kind != CHECK_FLOAT &&
            kind != CHECK_BYTES && kind != CHECK_BOOL) {
            /* Other values are left to the general parser. */
            return NULL;
        }
        Py_ssize_t size;
        const char *key = PyUnicode_AsUTF8AndSize(name, &size);
        if (key == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeError)) {
                PyErr_Clear();
            }
            return NULL;
        }
        t->keys[i] = key;
        t->keySizes[i] = size;
        t->kinds[i] = (unsigned char)kind;
        if (PyTuple_GET_ITEM(field, 2) == Py_True) {
            present++;
        }
    }
    if (present != required) {
        return NULL;
    }
    t->cls = (PyTypeObject *)PyTuple_GET_ITEM(spec, 0);
    t->names = names;
    t->n = n;
    t->usable = 1;
    return t;
}

static PyObject *quickClassic(DecoderCore *self, PyObject *spec,
                              const unsigned char *data, Py_ssize_t p,
                              Py_ssize_t limit, Py_ssize_t *after,
                              Py_ssize_t *tokens, int inMessage);

/* Read a token's header at data[*p], before limit, as the general parser
 * does, but only a prefix of at most 8 bytes: 1 with its type byte and
 * number, and *p past it; 0 if that cannot be done. */
static inline int
quickToken(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
           Py_ssize_t limit, unsigned int *typ, uint64_t *num)
{
    Py_ssize_t q = *p, start = q;
    uint64_t number = 0;
    int shift = 0;
    while (q < limit && data[q] < 0x80) {
        if (q - start >= 8 || q - start >= self->maxPrefix) {
            return 0;
        }
        number |= (uint64_t)data[q] << shift;
        shift += 7;
        q++;
    }
    if (q >= limit) {
        return 0;
    }
    *typ = data[q];
    *num = number;
    *p = q + 1;
    return 1;
}

/* The bytes of a string token whose header quickToken read (at *p, of num
 * bytes, within limit and maxStringBytes), or of a vocabulary token's
 * word; *p moves past them.  0 if there are none of these. */
static inline int
quickBytes(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
           Py_ssize_t limit, unsigned int typ, uint64_t num,
           const char **bytes, Py_ssize_t *size)
{
    if (typ == B_STRING) {
        if (num > (uint64_t)self->maxString ||
            (Py_ssize_t)num > limit - *p) {
            return 0;
        }
        *bytes = (const char *)data + *p;
        *size = (Py_ssize_t)num;
        *p += (Py_ssize_t)num;
        return 1;
    }
    if (typ == B_VOCAB && self->vocabulary != NULL) {
        PyObject *key = PyLong_FromUnsignedLongLong(num);
        if (key == NULL) {
            PyErr_Clear();
            return 0;
        }
        PyObject *word = PyDict_GetItemWithError(self->vocabulary, key);
        Py_DECREF(key);
        if (word == NULL || !PyBytes_CheckExact(word)) {
            PyErr_Clear();
            return 0;
        }
        /* The vocabulary holds it meanwhile. */
        *bytes = PyBytes_AS_STRING(word);
        *size = PyBytes_GET_SIZE(word);
        return 1;
    }
    return 0;
}

/* Whether the next token is the string (or vocabulary word) word. */
static inline int
quickWord(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
          Py_ssize_t limit, const char *word, Py_ssize_t wordSize)
{
    unsigned int typ;
    uint64_t num;
    const char *bytes;
    Py_ssize_t size;
    return quickToken(self, data, p, limit, &typ, &num) &&
           quickBytes(self, data, p, limit, typ, num, &bytes, &size) &&
           size == wordSize && memcmp(bytes, word, size) == 0;
}

/* Whether the next token is a list header of the given length. */
static inline int
quickList(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
          Py_ssize_t limit, uint64_t length)
{
    unsigned int typ;
    uint64_t num;
    return quickToken(self, data, p, limit, &typ, &num) && typ == B_LIST &&
           num == length;
}

/* Whether the rest of a two-element list (its header read as typ and num)
 * is [word, string]: then *bytes and *size are the string's. */
static inline int
quickTagged(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
            Py_ssize_t limit, unsigned int typ, uint64_t num,
            const char *word, Py_ssize_t wordSize, const char **bytes,
            Py_ssize_t *size)
{
    return typ == B_LIST && num == 2 &&
           quickWord(self, data, p, limit, word, wordSize) &&
           quickToken(self, data, p, limit, &typ, &num) &&
           quickBytes(self, data, p, limit, typ, num, bytes, size);
}

/* A field's value of the given kind, read from the bytes: a new
 * reference, or NOT_PLAIN_C where it is not one quickTyped reads, or NULL
 * on error.  *lists counts the list headers' declared elements. */
static PyObject *
quickValue(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
           Py_ssize_t limit, int kind, Py_ssize_t *lists)
{
    unsigned int typ;
    uint64_t num;
    const char *bytes;
    Py_ssize_t size;
    if (!quickToken(self, data, p, limit, &typ, &num)) {
        return NOT_PLAIN_C;
    }
    switch (kind) {
    case CHECK_FLOAT:
        if (typ == B_FLOAT) {
            if (limit - *p < 8) {
                return NOT_PLAIN_C;
            }
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) {
                bits = (bits << 8) | data[*p + i];
            }
            *p += 8;
            double value;
            memcpy(&value, &bits, 8);
            return PyFloat_FromDouble(value);
        }
        /* An int is a float field's value too. */
        /* fall through */
    case CHECK_INT:
        if (typ == B_INT || typ == B_LONGINT) {
            return PyLong_FromUnsignedLongLong(num);
        }
        if (typ == B_NEG || typ == B_LONGNEG) {
            /* At most 8 bytes of prefix: well within a long long. */
            return PyLong_FromLongLong(-(long long)num);
        }
        return NOT_PLAIN_C;
    case CHECK_BYTES:
        if (!quickBytes(self, data, p, limit, typ, num, &bytes, &size)) {
            return NOT_PLAIN_C;
        }
        return PyBytes_FromStringAndSize(bytes, size);
    case CHECK_STR:
        if (!quickTagged(self, data, p, limit, typ, num, "unicode", 7, &bytes,
                         &size)) {
            return NOT_PLAIN_C;
        }
        *lists += 2;
        {
            PyObject *text = textFromUTF8(bytes, size);
            if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeError)) {
                PyErr_Clear();
                return NOT_PLAIN_C;
            }
            return text;
        }
    case CHECK_BOOL:
        if (!quickTagged(self, data, p, limit, typ, num, "boolean", 7, &bytes,
                         &size)) {
            return NOT_PLAIN_C;
        }
        *lists += 2;
        if (size == 4 && memcmp(bytes, "true", 4) == 0) {
            Py_RETURN_TRUE;
        }
        if (size == 5 && memcmp(bytes, "false", 5) == 0) {
            Py_RETURN_FALSE;
        }
        return NOT_PLAIN_C;
    default:
        return NOT_PLAIN_C;
    }
}

/*
 * In plain-jelly mode with registered types, at a two-element list header
 * (already checked against the limits, and counted in tokens) at
 * data[pos]: if the list is a VALUE holding the copy of a type quickTemplate
 * accepts, all before limit, return the copy (wrapped in Jellied in a
 * message), set *after past it and add its lists' declared elements to
 * *tokens.  Otherwise return NULL, with no error set, having changed
 * nothing.
 */
static PyObject *
quickTyped(DecoderCore *self, const unsigned char *data, Py_ssize_t pos,
           Py_ssize_t limit, Py_ssize_t *after, Py_ssize_t *tokens)
{
    Py_ssize_t d = self->depth; /* the level this list would have */
    unsigned char parent = self->roles[d - 1];
    int value = parent == ROLE_MESSAGE || parent == ROLE_PAIR ||
                (parent == ROLE_VALUE && self->filled[d - 1] > 0 &&
                 self->dicts[d - 1] != NODE_DICTIONARY);
    /* Its lists nest three deeper: [key, value], then [b"unicode", key]. */
    if (!value || d + 3 > PLAIN_MAX_DEPTH || d + 3 >= self->maxDepth) {
        return NULL;
    }
    Py_ssize_t p = pos;
    unsigned int typ;
    uint64_t num;
    if (!quickToken(self, data, &p, limit, &typ, &num) || typ != B_STRING ||
        num > (uint64_t)self->maxString || (Py_ssize_t)num > limit - p) {
        return NULL;
    }
    const char *name = (const char *)data + p;
    Py_ssize_t nameSize = (Py_ssize_t)num;
    p += nameSize;
    PyObject *spec;
    PyObject *last = self->lastTag;
    if (last != NULL && PyBytes_GET_SIZE(last) == nameSize &&
        memcmp(PyBytes_AS_STRING(last), name, nameSize) == 0) {
        spec = self->lastSpec;
    }
    else {
        PyObject *tag = PyBytes_FromStringAndSize(name, nameSize);
        if (tag == NULL) {
            return NULL;
        }
        spec = typedSpec(self, tag);
        Py_DECREF(tag);
    }
    if (spec == NULL) {
        return NULL;
    }
    if (PyTuple_CheckExact(spec) && PyTuple_GET_SIZE(spec) == 6) {
        return quickClassic(self, spec, data, p, limit, after, tokens,
                            parent == ROLE_MESSAGE);
    }
    QuickTemplate *t = quickTemplate(self, spec);
    if (t == NULL) {
        return NULL;
    }
    Py_ssize_t n = t->n;
    Py_ssize_t lists = n + 1;
    PyObject *values[QUICK_FIELDS];
    uint64_t found = 0;
    Py_ssize_t k;
    PyObject *result = NULL;
    if (t->fixedFields == n) {
        /* The fixed bytes of the last copy read, compared segment by
         * segment; on any difference the copy is read field by field. */
        Py_ssize_t q = p;
        for (k = 0; k < n; k++) {
            Py_ssize_t size = t->starts[k + 1] - t->starts[k];
            if (limit - q < size ||
                memcmp(data + q, t->fixed + t->starts[k], size) != 0) {
                break;
            }
            q += size;
            PyObject *v = quickValue(self, data, &q, limit, t->kinds[k],
                                     &lists);
            if (v == NULL) {
                goto out;
            }
            if (v == NOT_PLAIN_C) {
                break;
            }
            values[k] = v;
            found |= (uint64_t)1 << k;
        }
        if (k == n) {
            lists += 4 * n;
            p = q;
            goto build;
        }
        /* Start again. */
        for (Py_ssize_t i = 0; i < k; i++) {
            Py_DECREF(values[i]);
        }
        found = 0;
        lists = n + 1;
    }
    Py_ssize_t segment = p;     /* where the fixed bytes before field k start */
    Py_ssize_t fixedSize = 0;   /* how many are kept so far */
    int inOrder = 1;
    /* Remade below: unusable until this copy is read whole. */
    t->fixedFields = 0;
    if ((uint64_t)n + 1 > (uint64_t)self->maxList ||
        !quickList(self, data, &p, limit, (uint64_t)n + 1) ||
        !quickWord(self, data, &p, limit, "dictionary", 10)) {
        return NULL;
    }
    for (k = 0; k < n; k++) {
        const char *key;
        Py_ssize_t keySize;
        /* [[b"unicode", key], value] */
        if (!quickList(self, data, &p, limit, 2) ||
            !quickToken(self, data, &p, limit, &typ, &num) ||
            !quickTagged(self, data, &p, limit, typ, num, "unicode", 7, &key,
                         &keySize)) {
            goto out;
        }
        lists += 4;
        /* The fields usually come in order; any order is read. */
        Py_ssize_t i = k;
        if (t->keySizes[i] != keySize ||
            memcmp(t->keys[i], key, keySize) != 0) {
            for (i = 0; i < n; i++) {
                if (t->keySizes[i] == keySize &&
                    memcmp(t->keys[i], key, keySize) == 0) {
                    break;
                }
            }
        }
        /* Not a field, or one already given (the general parser keeps
         * the last): left to it. */
        if (i == n || (found >> i) & 1) {
            goto out;
        }
        if (i != k || fixedSize + (p - segment) > QUICK_FIXED_BYTES) {
            inOrder = 0;
        }
        else {
            /* Kept for the next copy (in the template once this one is
             * read whole). */
            t->starts[k] = fixedSize;
            memcpy(t->fixed + fixedSize, data + segment, p - segment);
            fixedSize += p - segment;
        }
        PyObject *v = quickValue(self, data, &p, limit, t->kinds[i], &lists);
        if (v == NULL) {
            result = NULL;
            goto out;
        }
        if (v == NOT_PLAIN_C) {
            goto out;
        }
        values[i] = v;
        found |= (uint64_t)1 << i;
        segment = p;
    }
    if (inOrder) {
        t->starts[n] = fixedSize;
        t->fixedFields = n;
    }
build:
    if (lists > self->maxTokens - *tokens) {
        goto out;
    }
    result = buildDirectly(t->cls, t->names, values, n);
    if (result == NULL && stepAside()) {
        goto out;
    }
    if (result != NULL && parent == ROLE_MESSAGE) {
        result = wrapJellied(result);
    }
    if (result != NULL) {
        *after = p;
        *tokens += lists;
    }
out:
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((found >> i) & 1) {
            Py_DECREF(values[i]);
        }
    }
    return result;
}

/*
 * Reading a classic copy straight from the bytes.
 *
 * A classic copy class's receive spec (see pbext._classiccopies) has no
 * fields: its state is whatever dictionary the peer sends.  The commonest
 * is a few ordinary attribute names with ints, floats, bytes, strs, bools
 * or None, as Copyable.jellyFor writes an instance's __dict__:
 *
 *   [wireName, [b"dictionary", [[b"unicode", key], value], ...]]
 *
 * quickClassic reads such a copy as quickTyped reads a registered type's,
 * and builds it as buildClassic would from the state the general parser
 * makes, with the same checks, setting the attributes one by one as
 * object.__setattr__ does where the keys were checked (so no dictionary
 * is made for the state, as none is for a typed copy; see
 * classicInstance).  Anything else (another shape or value, a
 * key sent twice, bytes still to come, a limit reached, state the check
 * does not accept outright) makes it give up, having changed nothing, and
 * the general parser reads the same bytes again.
 *
 * Its template keeps the bytes of the last copy read whole but for its
 * values (the header, and each key with the tokens around it) and the
 * keys' strs: a copy whose bytes around its values are the same has the
 * same keys, which are not read again.
 */

/* The classic template for spec: self->classicQuick, emptied if it was
 * made for another spec; NULL with an error set if none can be made. */
static ClassicTemplate *
classicTemplate(DecoderCore *self, PyObject *spec)
{
    ClassicTemplate *t = self->classicQuick;
    if (t == NULL) {
        t = PyMem_Malloc(sizeof(ClassicTemplate));
        if (t == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        t->spec = NULL;
        t->n = 0;
        t->fixedKept = 0;
        self->classicQuick = t;
    }
    if (t->spec != spec) {
        classicTemplateClear(t);
        Py_INCREF(spec);
        Py_XSETREF(t->spec, spec);
    }
    return t;
}

/* A classic copy's None: its bytes are all fixed (see quickValueHead). */
#define KIND_NONE 6

/* The head of a classic copy's value at data[*p], if it is an int, float,
 * bytes, str, bool or None in its canonical tokens: 1 with its kind
 * (CHECK_*, or KIND_NONE) in *kind, *p past the tokens every value of
 * that kind starts with (a str's or bool's list header and word, all of
 * a None; nothing of the others) and *lists counting those lists'
 * declared elements; 0 (with *p unchanged) for anything else. */
static int
quickValueHead(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
               Py_ssize_t limit, int *kind, Py_ssize_t *lists)
{
    Py_ssize_t q = *p;
    unsigned int typ;
    uint64_t num;
    if (!quickToken(self, data, &q, limit, &typ, &num)) {
        return 0;
    }
    switch (typ) {
    case B_INT:
    case B_NEG:
    case B_LONGINT:
    case B_LONGNEG:
        *kind = CHECK_INT;
        return 1;
    case B_FLOAT:
        *kind = CHECK_FLOAT;
        return 1;
    case B_STRING:
    case B_VOCAB:
        *kind = CHECK_BYTES;
        return 1;
    case B_LIST:
        break;
    default:
        return 0;
    }
    if (num == 1) {
        /* [b"None"] */
        if (!quickWord(self, data, &q, limit, "None", 4)) {
            return 0;
        }
        *kind = KIND_NONE;
        *lists += 1;
        *p = q;
        return 1;
    }
    const char *word;
    Py_ssize_t size;
    if (num != 2 || !quickToken(self, data, &q, limit, &typ, &num) ||
        !quickBytes(self, data, &q, limit, typ, num, &word, &size) ||
        size != 7) {
        return 0;
    }
    if (memcmp(word, "unicode", 7) == 0) {
        *kind = CHECK_STR;
    }
    else if (memcmp(word, "boolean", 7) == 0) {
        *kind = CHECK_BOOL;
    }
    else {
        return 0;
    }
    *lists += 2;
    *p = q;
    return 1;
}

/* The rest of a classic copy's value whose head (of the given kind) is
 * read, at data[*p]: a new reference (and *p past it), NOT_PLAIN_C if it
 * is not one quickClassic reads, or NULL on error. */
static PyObject *
quickValueRest(DecoderCore *self, const unsigned char *data, Py_ssize_t *p,
               Py_ssize_t limit, int kind)
{
    unsigned int typ;
    uint64_t num;
    const char *bytes;
    Py_ssize_t size;
    if (kind == KIND_NONE) {
        Py_RETURN_NONE;
    }
    if (kind != CHECK_STR && kind != CHECK_BOOL) {
        Py_ssize_t noLists = 0;
        return quickValue(self, data, p, limit, kind, &noLists);
    }
    if (!quickToken(self, data, p, limit, &typ, &num) ||
        !quickBytes(self, data, p, limit, typ, num, &bytes, &size)) {
        return NOT_PLAIN_C;
    }
    if (kind == CHECK_BOOL) {
        if (size == 4 && memcmp(bytes, "true", 4) == 0) {
            Py_RETURN_TRUE;
        }
        if (size == 5 && memcmp(bytes, "false", 5) == 0) {
            Py_RETURN_FALSE;
        }
        return NOT_PLAIN_C;
    }
    PyObject *text = textFromUTF8(bytes, size);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeError)) {
        PyErr_Clear();
        return NOT_PLAIN_C;
    }
    return text;
}

/* The n keys of a copy, read from the bytes: as classicKeysPass and
 * sameKeys for a state holding them. */
static int
classicKeysAccepted(PyTypeObject *type, PyObject *spec, PyObject **keys,
                    Py_ssize_t n, ClassicCache *cache)
{
    int known = classicKnown(cache, type, spec);
    if (known && cache->keys != NULL && PyTuple_GET_SIZE(cache->keys) == n) {
        Py_ssize_t i = 0;
        while (i < n && sameKey(keys[i], PyTuple_GET_ITEM(cache->keys, i))) {
            i++;
        }
        if (i == n) {
            return 1;
        }
    }
    int ok = known ? 1 : classicHolds(type, PyTuple_GET_ITEM(spec, 3));
    if (ok <= 0) {
        return ok;
    }
    long mode = PyLong_AsLong(PyTuple_GET_ITEM(spec, 4));
    if (mode == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (mode != CLASSIC_UNCHECKED) {
        for (Py_ssize_t i = 0; i < n; i++) {
            ok = classicKeyPasses(type, keys[i], mode,
                                  PyTuple_GET_ITEM(spec, 5));
            if (ok <= 0) {
                return ok;
            }
        }
    }
    /* Read the tag after the lookups, which may assign one. */
    classicRemember(cache, type, spec);
    if (n <= CLASSIC_KEYS) {
        PyObject *remembered = PyTuple_New(n);
        if (remembered == NULL) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_INCREF(keys[i]);
            PyTuple_SET_ITEM(remembered, i, keys[i]);
        }
        Py_XSETREF(cache->keys, remembered);
    }
    return 1;
}

/* A classic copy of the n keys and values read from the bytes, built as
 * buildClassic builds it from a state holding them: a new reference,
 * NOT_PLAIN_C where the general parser must read it, NULL on error. */
static PyObject *
buildClassicQuick(PyObject *spec, PyObject **keys, PyObject **values,
                  Py_ssize_t n, ClassicCache *cache, PyObject **registered)
{
    /* Found registered earlier in this message: see
     * DecoderCore.classicRegisteredSpec. */
    int ok = *registered == spec ? 1 : classicRegistered(spec);
    if (ok > 0 && *registered != spec) {
        Py_INCREF(spec);
        Py_XSETREF(*registered, spec);
    }
    PyTypeObject *type = (PyTypeObject *)PyTuple_GET_ITEM(spec, 0);
    if (ok > 0) {
        ok = classicKeysAccepted(type, spec, keys, n, cache);
    }
    if (ok <= 0) {
        return ok < 0 ? NULL : NOT_PLAIN_C;
    }
    return classicInstance(type, spec, NULL, keys, values, n);
}


/* The values of a copy whose bytes around them are those the template
 * kept: 1 if they are (the values in values, *p past the copy, *lists
 * counting the lists' declared elements), else 0 having changed nothing,
 * or -1. */
static int
quickClassicAgain(DecoderCore *self, ClassicTemplate *t,
                  const unsigned char *data, Py_ssize_t *p, Py_ssize_t limit,
                  PyObject **values, Py_ssize_t *lists)
{
    Py_ssize_t q = *p, n = t->n, k;
    int failed = 0;
    for (k = 0; k < n; k++) {
        Py_ssize_t size = t->starts[k + 1] - t->starts[k];
        if (limit - q < size ||
            memcmp(data + q, t->fixed + t->starts[k], size) != 0) {
            break;
        }
        q += size;
        PyObject *v = quickValueRest(self, data, &q, limit, t->kinds[k]);
        if (v == NULL || v == NOT_PLAIN_C) {
            failed = v == NULL;
            break;
        }
        values[k] = v;
    }
    if (k == n) {
        /* The same lists as the copy the template was made from. */
        *lists += t->lists;
        *p = q;
        return 1;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        Py_DECREF(values[i]);
    }
    return failed ? -1 : 0;
}

/* The str of the key at bytes: the template's key k if it has the same
 * (ASCII) text, else a new one; NULL with no error set if the bytes are
 * not UTF-8, or with one. */
static PyObject *
quickClassicKey(DecoderCore *self, ClassicTemplate *t, Py_ssize_t k,
                const char *bytes, Py_ssize_t size)
{
    if (k < t->n) {
        PyObject *known = t->keys[k];
        if (PyUnicode_IS_ASCII(known) && PyUnicode_GET_LENGTH(known) == size &&
            memcmp(PyUnicode_DATA(known), bytes, size) == 0) {
            Py_INCREF(known);
            return known;
        }
    }
    PyObject *text = size <= KEY_CACHE_LONGEST
                         ? cachedKey(self, bytes, size)
                         : textFromUTF8(bytes, size);
    if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
    }
    return text;
}

/* Keep the n keys, the fixed bytes, the values' kinds and the lists of
 * a copy read whole in t. */
static void
quickClassicKeep(ClassicTemplate *t, PyObject **keys, Py_ssize_t n,
                 Py_ssize_t *starts, const unsigned char *fixed,
                 const unsigned char *kinds, Py_ssize_t lists)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(keys[i]);
    }
    classicTemplateClear(t);
    memcpy(t->keys, keys, n * sizeof(PyObject *));
    memcpy(t->kinds, kinds, n);
    memcpy(t->starts, starts, (n + 1) * sizeof(Py_ssize_t));
    memcpy(t->fixed, fixed, starts[n]);
    t->n = n;
    t->lists = lists;
    t->fixedKept = n > 0;
}

/* Read the state of a classic copy whole, from its dictionary's header
 * at data[*p]: its keys and values (n of them: *count), the fixed bytes
 * kept in t.  1 if it is one quickClassic reads, 0 if not, -1 on error;
 * *count are read either way (to be released). */
static int
quickClassicState(DecoderCore *self, ClassicTemplate *t,
                  const unsigned char *data, Py_ssize_t *p, Py_ssize_t limit,
                  PyObject **keys, PyObject **values, Py_ssize_t *count,
                  Py_ssize_t *lists)
{
    Py_ssize_t start = *p;
    unsigned int typ;
    uint64_t num;
    if (!quickToken(self, data, p, limit, &typ, &num) || typ != B_LIST ||
        num < 1 || num - 1 > QUICK_FIELDS || num > (uint64_t)self->maxList ||
        !quickWord(self, data, p, limit, "dictionary", 10)) {
        return 0;
    }
    Py_ssize_t m = (Py_ssize_t)num - 1, segment = start, fixedSize = 0;
    Py_ssize_t starts[QUICK_FIELDS + 1];
    unsigned char fixed[QUICK_FIXED_BYTES];
    unsigned char kinds[QUICK_FIELDS];
    Py_ssize_t before = *lists;
    int keep = 1;
    *lists += m + 1;
    for (Py_ssize_t n = 0; n < m; n++) {
        const char *bytes;
        Py_ssize_t size;
        /* [[b"unicode", key], value] */
        if (!quickList(self, data, p, limit, 2) ||
            !quickToken(self, data, p, limit, &typ, &num) ||
            !quickTagged(self, data, p, limit, typ, num, "unicode", 7, &bytes,
                         &size)) {
            return 0;
        }
        *lists += 4;
        PyObject *key = quickClassicKey(self, t, n, bytes, size);
        if (key == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (sameKey(key, keys[i])) {
                /* Sent twice: the general parser keeps the last. */
                Py_DECREF(key);
                return 0;
            }
        }
        int kind;
        if (!quickValueHead(self, data, p, limit, &kind, lists)) {
            Py_DECREF(key);
            return 0;
        }
        kinds[n] = (unsigned char)kind;
        if (keep && fixedSize + (*p - segment) <= QUICK_FIXED_BYTES) {
            starts[n] = fixedSize;
            memcpy(fixed + fixedSize, data + segment, *p - segment);
            fixedSize += *p - segment;
        }
        else {
            keep = 0;
        }
        PyObject *value = quickValueRest(self, data, p, limit, kind);
        if (value == NULL || value == NOT_PLAIN_C) {
            Py_DECREF(key);
            return value == NULL ? -1 : 0;
        }
        keys[n] = key;
        values[n] = value;
        *count = n + 1;
        segment = *p;
    }
    if (keep) {
        starts[m] = fixedSize;
        quickClassicKeep(t, keys, m, starts, fixed, kinds, *lists - before);
    }
    return 1;
}

/*
 * quickTyped for the copy of a classic class (spec its receive spec),
 * its wire name read: data[p] is its state's first byte.
 */
static PyObject *
quickClassic(DecoderCore *self, PyObject *spec, const unsigned char *data,
             Py_ssize_t p, Py_ssize_t limit, Py_ssize_t *after,
             Py_ssize_t *tokens, int inMessage)
{
    ClassicTemplate *t = classicTemplate(self, spec);
    if (t == NULL) {
        return NULL;
    }
    PyObject *keys[QUICK_FIELDS], *values[QUICK_FIELDS];
    Py_ssize_t n = 0, lists = 0;
    PyObject *result = NULL;
    int rc = 0;
    if (t->fixedKept) {
        rc = quickClassicAgain(self, t, data, &p, limit, values, &lists);
        if (rc > 0) {
            n = t->n;
            for (Py_ssize_t i = 0; i < n; i++) {
                keys[i] = t->keys[i];
                Py_INCREF(keys[i]);
            }
        }
    }
    if (rc == 0) {
        rc = quickClassicState(self, t, data, &p, limit, keys, values, &n,
                               &lists);
    }
    if (rc <= 0 || lists > self->maxTokens - *tokens) {
        goto out;
    }
    result = buildClassicQuick(spec, keys, values, n, &self->classic,
                               &self->classicRegisteredSpec);
    if (result == NOT_PLAIN_C) {
        result = NULL;
        goto out;
    }
    if (result != NULL && inMessage) {
        result = wrapJellied(result);
    }
    if (result != NULL) {
        *after = p;
        *tokens += lists;
    }
out:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(keys[i]);
        Py_DECREF(values[i]);
    }
    return result;
}

/*
 * Parse buf from offset on (the bytes held and the new ones), delivering
 * each complete top-level expression to emit (or appending it to the list
 * received).  This follows pbext._pydecoder.PythonDecoder._parse step for
 * step.
 */
static int
decodeBuffer(DecoderCore *self, PyObject *buf, PyObject *emit,
             PyObject *received, PyObject *first, Py_ssize_t offset)
{
    const unsigned char *data =
        (const unsigned char *)PyBytes_AS_STRING(buf) + offset;
    Py_ssize_t end = PyBytes_GET_SIZE(buf) - offset;
    Py_ssize_t pos = 0, need = 0, stringSize = 0;
    Py_ssize_t tokens = self->tokens;
    Py_ssize_t maxMessageBytes = self->maxMessageBytes;
    /* Offsets of the current message's first byte and of its last
     * allowed byte, relative to buf; saturating. */
    Py_ssize_t messageOrigin = -self->messageBytes;
    Py_ssize_t messageLimit = maxMessageBytes > PY_SSIZE_T_MAX + messageOrigin
                                  ? PY_SSIZE_T_MAX
                                  : messageOrigin + maxMessageBytes;
    Py_ssize_t stringLimit = end < messageLimit ? end : messageLimit;
    int status = 0;
    /* Python code may have changed Twisted's registry since the last
     * bytes: looked up again. */
    Py_CLEAR(self->classicRegisteredSpec);

    for (;;) {
        Py_ssize_t start = pos;
        unsigned int typ;
        uint64_t num = 0;
        PyObject *numObject = NULL; /* set for prefixes over 8 bytes */
        PyObject *item;
        int rawItem = 0; /* plain-jelly mode: item is a list that is not */

        if (first != NULL) {
            /* A long string completed from held chunks (see decode). */
            item = first;
            first = NULL;
            goto place;
        }

        if (pos >= end) {
            break;
        }
        typ = data[pos];
        if (typ > 127) {
            pos += 1;
        }
        else {
            if (pos + 1 >= end) {
                break;
            }
            if (data[pos + 1] > 127) {
                num = typ;
                typ = data[pos + 1];
                pos += 2;
            }
            else {
                Py_ssize_t scanEnd = pos + self->maxPrefix + 1;
                if (scanEnd > end || scanEnd < pos) {
                    scanEnd = end;
                }
                Py_ssize_t found = -1;
                for (Py_ssize_t i = pos + 2; i < scanEnd; i++) {
                    if (data[i] > 127) {
                        found = i;
                        break;
                    }
                }
                if (found < 0) {
                    if (end - pos > self->maxPrefix) {
                        failWith(self, "maxPrefixBytes",
                                 PyUnicode_FromFormat(
                                     "more than %zd bytes of prefix",
                                     self->maxPrefix));
                        status = -1;
                        goto done;
                    }
                    break;
                }
                typ = data[found];
                Py_ssize_t length = found - start;
                if (length <= 8) {
                    for (Py_ssize_t i = found - 1; i >= start; i--) {
                        num = (num << 7) | data[i];
                    }
                }
                else {
                    numObject = bigNumber(data + start, length);
                    if (numObject == NULL) {
                        status = -1;
                        goto done;
                    }
                    /* Long prefixes of small numbers (leading zero
                     * digits) are allowed: use the value if it fits. */
                    unsigned long long value =
                        PyLong_AsUnsignedLongLong(numObject);
                    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
                        PyErr_Clear();
                        num = UINT64_MAX;
                    }
                    else {
                        num = value;
                    }
                }
                pos = found + 1;
            }
        }

        if (typ == B_STRING) {
            if (num > (uint64_t)self->maxString) {
                PyObject *shown = numObject ? numObject
                                            : PyLong_FromUnsignedLongLong(num);
                numObject = NULL;
                failWith(self, "maxStringBytes",
                         shown ? PyUnicode_FromFormat(
                                     "string of %S bytes, more than %zd",
                                     shown, self->maxString)
                               : NULL);
                Py_XDECREF(shown);
                status = -1;
                goto done;
            }
            Py_CLEAR(numObject);
            Py_ssize_t stop = (Py_ssize_t)num > PY_SSIZE_T_MAX - pos
                                  ? PY_SSIZE_T_MAX
                                  : pos + (Py_ssize_t)num;
            if (stop > stringLimit) {
                if (stop > messageLimit) {
                    tooLong(self);
                    status = -1;
                    goto done;
                }
                need = stop - start;
                stringSize = (Py_ssize_t)num;
                pos = start;
                break;
            }
            item = PyBytes_FromStringAndSize((const char *)data + pos,
                                             (Py_ssize_t)num);
            if (item == NULL) {
                status = -1;
                goto done;
            }
            pos = stop;
        }
        else if (typ == B_LIST) {
            if (num > (uint64_t)(self->maxTokens - tokens)) {
                Py_XDECREF(numObject);
                failWith(self, "maxMessageTokens",
                         PyUnicode_FromFormat(
                             "message of more than %zd tokens",
                             self->maxTokens));
                status = -1;
                goto done;
            }
            tokens += (Py_ssize_t)num;
            if (num > (uint64_t)self->maxList) {
                Py_XDECREF(numObject);
                failWith(self, "maxListLength",
                         PyUnicode_FromFormat(
                             "list of %llu elements, more than %zd",
                             (unsigned long long)num, self->maxList));
                status = -1;
                goto done;
            }
            Py_XDECREF(numObject);
            if (self->depth >= self->maxDepth) {
                failWith(self, "maxDepth",
                         PyUnicode_FromFormat(
                             "lists nested more than %zd deep",
                             self->maxDepth));
                status = -1;
                goto done;
            }
            if (pos > messageLimit) {
                tooLong(self);
                status = -1;
                goto done;
            }
            if (num == 2 && self->plainJelly && self->depth > 0) {
                /* A dictionary's pair of a text and a text or an int,
                 * read whole; else the commonest plain jelly, [b"unicode",
                 * utf8]: made a str straight from the bytes when they are
                 * all here. */
                item = quickPair(self, data, pos, stringLimit, &tokens, &pos);
                if (item == NULL && !PyErr_Occurred()) {
                    item = quickText(self, data, pos, stringLimit, &pos);
                }
                if (item == NULL && !PyErr_Occurred() &&
                    self->plainTypes != NULL) {
                    /* The copy of a registered type, read straight. */
                    item = quickTyped(self, data, pos, stringLimit, &pos,
                                      &tokens);
                }
                if (item == NULL && PyErr_Occurred()) {
                    status = -1;
                    goto done;
                }
                if (item != NULL) {
                    goto place;
                }
            }
            if (num) {
                /* Every element takes a byte at least: a list whose
                 * elements could all be in the bytes at hand is made at
                 * its full size, others grow as elements arrive, so
                 * memory follows the bytes received. */
                Py_ssize_t want = (Py_ssize_t)num;
                PyObject *list;
                if (want == 2 && self->spareCount > 0 && self->depth > 0 &&
                    self->plainJelly &&
                    self->roles[self->depth - 1] == ROLE_VALUE &&
                    self->dicts[self->depth - 1] == NODE_DICTIONARY &&
                    self->filled[self->depth - 1] > 0) {
                    /* A dictionary's pair: an emptied one, if kept. */
                    list = self->spare[--self->spareCount];
                }
                else {
                    list = openList(want <= end - pos ? want : 0);
                }
                if (list == NULL) {
                    status = -1;
                    goto done;
                }
                if (pushList(self, list, want) < 0) {
                    Py_DECREF(list);
                    status = -1;
                    goto done;
                }
                if (self->plainJelly && assignRole(self) < 0) {
                    status = -1;
                    goto done;
                }
                continue;
            }
            item = PyList_New(0);
            if (item == NULL) {
                status = -1;
                goto done;
            }
            rawItem = 1;
        }
        else if (typ == B_VOCAB) {
            if (self->vocabulary == NULL) {
                Py_XDECREF(numObject);
                failWith(self, "badVocabulary",
                         PyUnicode_FromString(
                             "vocabulary token before the pb dialect was "
                             "selected"));
                status = -1;
                goto done;
            }
            PyObject *key = numObject ? numObject
                                      : PyLong_FromUnsignedLongLong(num);
            numObject = NULL;
            if (key == NULL) {
                status = -1;
                goto done;
            }
            item = PyDict_GetItemWithError(self->vocabulary, key);
            if (item == NULL) {
                if (!PyErr_Occurred()) {
                    failWith(self, "badVocabulary",
                             PyUnicode_FromFormat(
                                 "unknown vocabulary token %S", key));
                }
                Py_DECREF(key);
                status = -1;
                goto done;
            }
            Py_DECREF(key);
            Py_INCREF(item);
        }
        else if (typ == B_INT || typ == B_LONGINT || typ == B_NEG ||
                 typ == B_LONGNEG) {
            if (numObject == NULL) {
                numObject = PyLong_FromUnsignedLongLong(num);
                if (numObject == NULL) {
                    status = -1;
                    goto done;
                }
            }
            if (typ == B_NEG || typ == B_LONGNEG) {
                item = PyNumber_Negative(numObject);
                Py_DECREF(numObject);
                if (item == NULL) {
                    status = -1;
                    goto done;
                }
            }
            else {
                item = numObject;
            }
        }
        else if (typ == B_FLOAT) {
            Py_XDECREF(numObject);
            Py_ssize_t stop = pos + 8;
            if (stop > stringLimit) {
                if (stop > messageLimit) {
                    tooLong(self);
                    status = -1;
                    goto done;
                }
                need = stop - start;
                pos = start;
                break;
            }
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) {
                bits = (bits << 8) | data[pos + i];
            }
            double value;
            memcpy(&value, &bits, 8);
            item = PyFloat_FromDouble(value);
            if (item == NULL) {
                status = -1;
                goto done;
            }
            pos = stop;
        }
        else {
            Py_XDECREF(numObject);
            failWith(self, "badTypeByte",
                     PyUnicode_FromFormat("invalid type byte 0x%02x", typ));
            status = -1;
            goto done;
        }

    place:
        /* Add the item to the innermost open list, closing every list it
         * completes; a complete top-level item is a message. */
        while (self->depth > 0) {
            Py_ssize_t top = self->depth - 1;
            PyObject *cur = self->lists[top];
            Py_ssize_t filled = self->filled[top];
            if (self->plainJelly && placeCheck(self, top, item, rawItem) < 0) {
                Py_DECREF(item);
                status = -1;
                goto done;
            }
            if (PyList_GET_SIZE(cur) > filled) {
                setSlot(cur, filled, item);
            }
            else {
                int rc = PyList_Append(cur, item);
                Py_DECREF(item);
                if (rc < 0) {
                    status = -1;
                    goto done;
                }
            }
            item = NULL;
            filled++;
            if (filled < self->wants[top]) {
                self->filled[top] = filled;
                break;
            }
            item = cur;
            self->lists[top] = NULL;
            self->depth = top;
            rawItem = 0;
            if (self->plainJelly && top > 0) {
                rawItem = completed(self, top, &item);
                if (rawItem < 0) {
                    Py_XDECREF(item);
                    status = -1;
                    goto done;
                }
            }
        }
        if (item == NULL) {
            continue;
        }
        /* A complete message. */
        if (pos > messageLimit) {
            Py_DECREF(item);
            tooLong(self);
            status = -1;
            goto done;
        }
        if (self->keys != NULL || self->spare != NULL ||
            self->quick != NULL || self->classicQuick != NULL ||
            self->classic.spec != NULL ||
            self->classicRegisteredSpec != NULL) {
            releaseCaches(self);
        }
        tokens = 1;
        messageOrigin = pos;
        messageLimit = maxMessageBytes > PY_SSIZE_T_MAX - pos
                           ? PY_SSIZE_T_MAX
                           : pos + maxMessageBytes;
        stringLimit = end < messageLimit ? end : messageLimit;
        int rc;
        if (emit != NULL) {
            PyObject *result = PyObject_CallOneArg(emit, item);
            rc = result == NULL ? -1 : 0;
            Py_XDECREF(result);
        }
        else {
            rc = PyList_Append(received, item);
        }
        Py_DECREF(item);
        if (rc < 0) {
            status = -1;
            goto done;
        }
    }

    if (end > messageLimit) {
        tooLong(self);
        status = -1;
    }

done:
    self->tokens = tokens;
    self->messageBytes = pos - messageOrigin;
    Py_CLEAR(self->chunks);
    self->have = 0;
    self->need = 0;
    self->longSize = 0;
    if (pos < end) {
        PyObject *tail = pos || offset
                             ? PyBytes_FromStringAndSize(
                                   (const char *)data + pos, end - pos)
                             : (Py_INCREF(buf), buf);
        if (tail == NULL) {
            return -1;
        }
        self->chunks = PyList_New(1);
        if (self->chunks == NULL) {
            Py_DECREF(tail);
            return -1;
        }
        PyList_SET_ITEM(self->chunks, 0, tail);
        self->have = end - pos;
        self->need = need;
        self->longSize = stringSize;
    }
    return status;
}


/* Strings longer than LONG_STRING are received in place (see
 * startLongString) once this share of them has arrived: a peer makes a decoder hold at
 * most this many times the bytes it sent. */
#define LONG_STRING_SHARE 16

/* The most bytes a receive buffer holds: small enough to be memory the
 * allocator reuses warm from one string to the next, large enough that a
 * long string takes few reads. */
#define STAGE_SIZE (64 * 1024)

/*
 * A writable buffer for the next bytes of a long string, handed out by
 * DecoderCore.receiveBuffer so that a transport can receive them with
 * socket.recv_into: a view of the start of the decoder's own bytearray
 * (its stage), never of the string, which bufferFilled then fills from
 * it.  So no buffer handed out ever writes into a bytes object: the
 * string is written only by this module's memcpy, between its creation
 * and its delivery, as the C API allows for a bytes object just made.
 * It refuses new views once the decoder has moved on; a view still open
 * then can only write into the stage, which this object keeps alive.
 */
typedef struct {
    PyObject_HEAD
    PyObject *string;   /* the stage: a bytearray */
    Py_ssize_t offset, length;
    Py_ssize_t exports;
    int current;
} ReceiveBuffer;

static int
ReceiveBuffer_getbuffer(ReceiveBuffer *self, Py_buffer *view, int flags)
{
    if (!self->current) {
        view->obj = NULL;
        PyErr_SetString(PyExc_BufferError,
                        "this receive buffer is no longer current");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self,
                          PyByteArray_AS_STRING(self->string) + self->offset,
                          self->length, 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
ReceiveBuffer_releasebuffer(ReceiveBuffer *self, Py_buffer *Py_UNUSED(view))
{
    self->exports--;
}

static void
ReceiveBuffer_dealloc(ReceiveBuffer *self)
{
    Py_XDECREF(self->string);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
ReceiveBuffer_length(ReceiveBuffer *self)
{
    return self->length;
}

static PyBufferProcs ReceiveBuffer_asBuffer = {
    (getbufferproc)ReceiveBuffer_getbuffer,
    (releasebufferproc)ReceiveBuffer_releasebuffer,
};

static PySequenceMethods ReceiveBuffer_asSequence = {
    .sq_length = (lenfunc)ReceiveBuffer_length,
};

static PyTypeObject ReceiveBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbext._speedups.ReceiveBuffer",
    .tp_doc = "A writable buffer over the rest of a long string being "
              "received (see pbext.interfaces.IDecoder.receiveBuffer).",
    .tp_basicsize = sizeof(ReceiveBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)ReceiveBuffer_dealloc,
    .tp_as_buffer = &ReceiveBuffer_asBuffer,
    .tp_as_sequence = &ReceiveBuffer_asSequence,
};

/* Stop handing out the current receive buffer (bytes written into it
 * since are ignored). */
static void
withdrawOffer(DecoderCore *self)
{
    ReceiveBuffer *offered = (ReceiveBuffer *)self->offered;
    if (offered != NULL) {
        offered->current = 0;
        Py_CLEAR(self->offered);
    }
}

/*
 * If the held bytes start a long string of which enough has arrived, make
 * the string at its final size now and copy the body held into it: the
 * rest is received in place (see receiveBuffer), or copied there once, and
 * the string is complete without joining chunks.  Returns 0 or -1.
 */
static int
startLongString(DecoderCore *self)
{
    if (self->chunks == NULL || self->longSize <= LONG_STRING) {
        return 0;
    }
    Py_ssize_t size = self->longSize;
    Py_ssize_t header = self->need - size;
    Py_ssize_t body = self->have - header;
    if (body < size / LONG_STRING_SHARE) {
        return 0;
    }
    PyObject *string = PyBytes_FromStringAndSize(NULL, size);
    if (string == NULL) {
        return -1;
    }
    char *out = PyBytes_AS_STRING(string);
    Py_ssize_t skip = header;
    PyObject *chunks = self->chunks;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunks); i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        Py_ssize_t length = PyBytes_GET_SIZE(chunk) - skip;
        if (length > 0) {
            memcpy(out, PyBytes_AS_STRING(chunk) + skip, length);
            out += length;
        }
        skip = length < 0 ? -length : 0;
    }
    Py_CLEAR(self->chunks);
    self->longString = string;
    return 0;
}

/* The long string is complete: take it (a new reference), counting its
 * bytes as parsed bytes of the message. */
static PyObject *
finishLongString(DecoderCore *self)
{
    withdrawOffer(self);
    PyObject *string = self->longString;
    self->longString = NULL;
    self->placed = 0;
    Py_CLEAR(self->stage);
    self->messageBytes += self->need;
    self->have = 0;
    self->need = 0;
    self->longSize = 0;
    return string;
}

static int
parseHeldFrom(DecoderCore *self, PyObject *buf, PyObject *emit,
              PyObject *received, PyObject *first, Py_ssize_t offset)
{
    self->busy = 1;
    int rc = decodeBuffer(self, buf, emit, received, first, offset);
    self->busy = 0;
    Py_DECREF(buf);
    if (rc == 0) {
        rc = startLongString(self);
    }
    return rc;
}

/* Copy the held chunks, one after the other, to out; return the end. */
static char *
copyHeld(DecoderCore *self, char *out)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(self->chunks); i++) {
        PyObject *chunk = PyList_GET_ITEM(self->chunks, i);
        memcpy(out, PyBytes_AS_STRING(chunk), PyBytes_GET_SIZE(chunk));
        out += PyBytes_GET_SIZE(chunk);
    }
    return out;
}

/* Parse buf (stolen) whole, as parseHeldFrom does. */
static int
parseHeld(DecoderCore *self, PyObject *buf, PyObject *emit,
          PyObject *received, PyObject *first)
{
    return parseHeldFrom(self, buf, emit, received, first, 0);
}

/* The most bytes held for an incomplete token that completeHeld joins
 * with the start of the next chunk. */
#define HELD_JOIN 4096

/*
 * Bytes are held for an incomplete token (a few, usually: a chunk of a
 * TCP stream ends anywhere) and buf brings the rest of it.  Parse the
 * held bytes joined with only the part of buf that completes the token,
 * so that the rest of buf can be parsed where it is (see decode), not
 * copied into one buffer with them.  The stream is parsed as if it had
 * been cut at another place, which changes nothing of what it gives.
 * Returns how many bytes of buf were used (0 if none: then the general
 * join follows), or -1 on error.
 */
static Py_ssize_t
completeHeld(DecoderCore *self, PyObject *buf, PyObject *emit,
             PyObject *received)
{
    Py_ssize_t size = PyBytes_GET_SIZE(buf);
    Py_ssize_t used = 0;
    /* Two rounds, usually: a header cut in two, then the string it
     * starts. */
    for (int round = 0; round < 4; round++) {
        if (self->chunks == NULL || self->longSize > LONG_STRING ||
            self->have > HELD_JOIN) {
            break;
        }
        Py_ssize_t held = self->have;
        Py_ssize_t want = -1;
        if (self->need > held) {
            /* A string or a float: complete with its need met. */
            want = self->need - held;
        }
        else {
            /* A number prefix: complete with its type byte (the parser
             * refuses a prefix too long where it meets it). */
            const unsigned char *data =
                (const unsigned char *)PyBytes_AS_STRING(buf);
            for (Py_ssize_t i = used; i < size && i - used <= HELD_JOIN; i++) {
                if (data[i] > 127) {
                    want = i + 1 - used;
                    break;
                }
            }
        }
        if (want < 0 || want >= size - used || want > HELD_JOIN) {
            break;
        }
        PyObject *joined = PyBytes_FromStringAndSize(NULL, held + want);
        if (joined == NULL) {
            return -1;
        }
        char *out = copyHeld(self, PyBytes_AS_STRING(joined));
        memcpy(out, PyBytes_AS_STRING(buf) + used, want);
        used += want;
        if (parseHeld(self, joined, emit, received, NULL) < 0) {
            return -1;
        }
    }
    return used;
}

/* Raise the recorded failure again, or refuse a call from a callback. */
static int
checkUsable(DecoderCore *self)
{
    if (self->failure != NULL) {
        PyObject *exc = PyObject_CallObject(FramingError, self->failure);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a Decoder cannot be fed from its own callback");
        return -1;
    }
    return 0;
}

static int
decode(DecoderCore *self, PyObject *data, PyObject *emit, PyObject *received)
{
    if (checkUsable(self) < 0) {
        return -1;
    }
    PyObject *buf, *first = NULL;
    if (PyBytes_CheckExact(data)) {
        Py_INCREF(data);
        buf = data;
    }
    else {
        buf = PyObject_CallOneArg((PyObject *)&PyBytes_Type, data);
        if (buf == NULL) {
            return -1;
        }
    }
    if (self->longString != NULL) {
        /* Copy into the long string what belongs to it. */
        withdrawOffer(self);
        self->placed = 0;
        Py_ssize_t size = PyBytes_GET_SIZE(buf);
        Py_ssize_t room = self->need - self->have;
        Py_ssize_t n = size < room ? size : room;
        memcpy(PyBytes_AS_STRING(self->longString) + self->longSize - room,
               PyBytes_AS_STRING(buf), n);
        self->have += n;
        if (self->have < self->need) {
            Py_DECREF(buf);
            return 0;
        }
        first = finishLongString(self);
        if (first == NULL) {
            Py_DECREF(buf);
            return -1;
        }
        PyObject *rest = PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + n,
                                                   size - n);
        Py_DECREF(buf);
        if (rest == NULL) {
            Py_DECREF(first);
            return -1;
        }
        return parseHeld(self, rest, emit, received, first);
    }
    if (self->chunks != NULL) {
        Py_ssize_t used = completeHeld(self, buf, emit, received);
        if (used < 0) {
            Py_DECREF(buf);
            return -1;
        }
        if (used > 0) {
            if (self->chunks == NULL && self->longString == NULL) {
                /* The rest of the chunk, parsed where it is. */
                return parseHeldFrom(self, buf, emit, received, NULL, used);
            }
            /* Still waiting (or a long string began): the rest is a
             * chunk of its own, decoded as any other. */
            PyObject *rest = PyBytes_FromStringAndSize(
                PyBytes_AS_STRING(buf) + used, PyBytes_GET_SIZE(buf) - used);
            Py_DECREF(buf);
            if (rest == NULL) {
                return -1;
            }
            if (self->longString != NULL) {
                /* Once: the long string's path joins nothing. */
                int rc = decode(self, rest, emit, received);
                Py_DECREF(rest);
                return rc;
            }
            buf = rest;
        }
    }
    if (self->chunks != NULL) {
        /* Waiting for the rest of a token: only keep the chunk until it
         * is whole. */
        if (PyList_Append(self->chunks, buf) < 0) {
            Py_DECREF(buf);
            return -1;
        }
        self->have += PyBytes_GET_SIZE(buf);
        Py_DECREF(buf);
        if (self->have < self->need) {
            return startLongString(self);
        }
        buf = PyBytes_FromStringAndSize(NULL, self->have);
        if (buf == NULL) {
            return -1;
        }
        copyHeld(self, PyBytes_AS_STRING(buf));
    }
    return parseHeld(self, buf, emit, received, first);
}

static PyObject *
DecoderCore_receiveBuffer(DecoderCore *self, PyObject *Py_UNUSED(unused))
{
    if (self->longString == NULL || self->failure != NULL || self->busy) {
        Py_RETURN_NONE;
    }
    withdrawOffer(self);
    self->placed = 0;
    Py_ssize_t room = self->need - self->have;
    Py_ssize_t length = room < STAGE_SIZE ? room : STAGE_SIZE;
    if (self->stage == NULL) {
        self->stage = PyByteArray_FromStringAndSize(NULL, STAGE_SIZE);
        if (self->stage == NULL) {
            return NULL;
        }
    }
    ReceiveBuffer *offer = PyObject_New(ReceiveBuffer, &ReceiveBufferType);
    if (offer == NULL) {
        return NULL;
    }
    Py_INCREF(self->stage);
    offer->string = self->stage;
    offer->offset = 0;
    offer->length = length;
    offer->exports = 0;
    offer->current = 1;
    Py_INCREF(offer);
    self->offered = (PyObject *)offer;
    return (PyObject *)offer;
}

static PyObject *
DecoderCore_bufferFilled(DecoderCore *self, PyObject *args)
{
    Py_ssize_t count;
    PyObject *emit;
    if (!PyArg_ParseTuple(args, "nO:bufferFilled", &count, &emit)) {
        return NULL;
    }
    if (checkUsable(self) < 0) {
        return NULL;
    }
    if (self->offered == NULL && self->placed > 0) {
        /* Received in place by receiveFrom: already where they belong. */
        if (count != self->placed) {
            PyErr_Format(PyExc_ValueError,
                         "%zd bytes were received in place, not %zd",
                         self->placed, count);
            return NULL;
        }
        self->placed = 0;
    }
    else {
        if (self->offered == NULL) {
            PyErr_SetString(PyExc_ValueError,
                            "no receive buffer is outstanding");
            return NULL;
        }
        Py_ssize_t length = ((ReceiveBuffer *)self->offered)->length;
        if (count < 0 || count > length) {
            PyErr_Format(PyExc_ValueError,
                         "%zd bytes cannot fill a receive buffer of %zd",
                         count, length);
            return NULL;
        }
        withdrawOffer(self);
        /* The bytes received into the stage, copied where they belong in
         * the string (which nothing else sees until it is complete). */
        Py_ssize_t room = self->need - self->have;
        memcpy(PyBytes_AS_STRING(self->longString) + self->longSize - room,
               PyByteArray_AS_STRING(self->stage), count);
    }
    self->have += count;
    if (self->have < self->need) {
        Py_RETURN_NONE;
    }
    PyObject *first = finishLongString(self);
    if (first == NULL) {
        return NULL;
    }
    PyObject *rest = PyBytes_FromStringAndSize(NULL, 0);
    if (rest == NULL) {
        Py_DECREF(first);
        return NULL;
    }
    if (parseHeld(self, rest, emit, NULL, first) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

#ifdef RECEIVES_FROM_SOCKETS
/*
 * Receive what the socket fd has of the rest of the long string arriving,
 * with one recv(2) straight into the string: the bytes object made for it
 * at its final size, which nothing but this decoder sees until it is
 * complete (as memcpy fills it otherwise; no buffer over it is ever handed
 * out).  One system call and no copy, where receiveBuffer's stage takes a
 * read and a copy per 64 KiB.  The count is then given to bufferFilled,
 * as for a receive buffer; feeding or asking for a buffer first drops
 * these bytes.  None when no string is arriving (or the decoder failed,
 * or is parsing).
 */
static PyObject *
DecoderCore_receiveFrom(DecoderCore *self, PyObject *socketObject)
{
    int fd = PyObject_AsFileDescriptor(socketObject);
    if (fd < 0) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            /* A closed socket's fileno() is -1: what recv_into raises. */
            PyErr_Clear();
            errno = EBADF;
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return NULL;
    }
    if (self->longString == NULL || self->failure != NULL || self->busy) {
        Py_RETURN_NONE;
    }
    withdrawOffer(self);
    self->placed = 0;
    Py_ssize_t room = self->need - self->have;
    char *at = PyBytes_AS_STRING(self->longString) + self->longSize - room;
    Py_ssize_t count;
    for (;;) {
        count = (Py_ssize_t)recv(fd, at, (size_t)room, 0);
        if (count >= 0 || errno != EINTR) {
            break;
        }
        if (PyErr_CheckSignals() < 0) {
            return NULL;
        }
    }
    if (count < 0) {
        /* EAGAIN gives BlockingIOError, as socket.recv_into raises. */
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->placed = count;
    return PyLong_FromSsize_t(count);
}
#endif

static PyObject *
DecoderCore_feed(DecoderCore *self, PyObject *data)
{
    PyObject *received = PyList_New(0);
    if (received == NULL) {
        return NULL;
    }
    if (decode(self, data, NULL, received) < 0) {
        Py_DECREF(received);
        return NULL;
    }
    return received;
}

static PyObject *
DecoderCore_feedTo(DecoderCore *self, PyObject *args)
{
    PyObject *data, *emit;
    if (!PyArg_ParseTuple(args, "OO:feedTo", &data, &emit)) {
        return NULL;
    }
    if (decode(self, data, emit, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
DecoderCore_setVocabulary(DecoderCore *self, PyObject *vocabulary)
{
    if (vocabulary == Py_None) {
        Py_CLEAR(self->vocabulary);
        Py_RETURN_NONE;
    }
    /* A dict is read as it is, not copied: stock banana reads the table
     * it was given at each token too, and a copy of Twisted's table (which
     * every connection shares) would cost each connection a kilobyte.
     * Nothing changes a word between its lookup and its use: its bytes
     * are compared or copied at once, without running any Python code. */
    PyObject *table;
    if (PyDict_CheckExact(vocabulary)) {
        table = Py_NewRef(vocabulary);
    }
    else {
        table = PyDict_New();
        if (table == NULL) {
            return NULL;
        }
        if (PyDict_Update(table, vocabulary) < 0) {
            Py_DECREF(table);
            return NULL;
        }
    }
    Py_XSETREF(self->vocabulary, table);
    Py_RETURN_NONE;
}

static PyObject *
DecoderCore_setPlainJelly(DecoderCore *self, PyObject *flag)
{
    int on = PyObject_IsTrue(flag);
    if (on < 0) {
        return NULL;
    }
    if (self->depth > 0 || self->chunks != NULL || self->longString != NULL ||
        self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "plain-jelly mode changes only between messages");
        return NULL;
    }
    self->plainJelly = on;
    Py_RETURN_NONE;
}

static PyObject *
DecoderCore_setPlainTypes(DecoderCore *self, PyObject *types)
{
    if (types != Py_None && !PyDict_CheckExact(types)) {
        PyErr_SetString(PyExc_TypeError, "types must be a dict or None");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the types cannot change while decoding");
        return NULL;
    }
    /* A type met before the change is built only if it is still in the
     * new table when its expression completes. */
    Py_CLEAR(self->lastTag);
    Py_CLEAR(self->lastSpec);
    if (types == Py_None) {
        Py_CLEAR(self->plainTypes);
    }
    else {
        Py_INCREF(types);
        Py_XSETREF(self->plainTypes, types);
    }
    Py_RETURN_NONE;
}

static PyObject *
DecoderCore_getPendingBytes(DecoderCore *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->messageBytes + self->have);
}

static PyObject *
DecoderCore_getWantedBytes(DecoderCore *self, void *Py_UNUSED(closure))
{
    Py_ssize_t wanted = self->chunks != NULL || self->longString != NULL
                            ? self->need - self->have
                            : 0;
    return PyLong_FromSsize_t(wanted > 0 ? wanted : 0);
}

static PyObject *
DecoderCore_getMessageStarted(DecoderCore *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->messageBytes + self->have > 0);
}

static PyMethodDef DecoderCore_methods[] = {
    {"feed", (PyCFunction)DecoderCore_feed, METH_O,
     "feed(data) -> list: as pbext.interfaces.IDecoder.feed."},
    {"feedTo", (PyCFunction)DecoderCore_feedTo, METH_VARARGS,
     "feedTo(data, expressionReceived): as "
     "pbext.interfaces.IDecoder.feedTo."},
    {"receiveBuffer", (PyCFunction)DecoderCore_receiveBuffer, METH_NOARGS,
     "receiveBuffer() -> buffer or None: as "
     "pbext.interfaces.IDecoder.receiveBuffer."},
    {"bufferFilled", (PyCFunction)DecoderCore_bufferFilled, METH_VARARGS,
     "bufferFilled(count, expressionReceived): as "
     "pbext.interfaces.IDecoder.bufferFilled."},
#ifdef RECEIVES_FROM_SOCKETS
    {"receiveFrom", (PyCFunction)DecoderCore_receiveFrom, METH_O,
     "receiveFrom(socket) -> int or None: receive what the socket has of "
     "the long string arriving straight into it (one recv); then call "
     "bufferFilled with the count.  None if no string is arriving."},
#endif
    {"setPlainJelly", (PyCFunction)DecoderCore_setPlainJelly, METH_O,
     "setPlainJelly(flag): deliver the plain jelly values inside each "
     "message as values (see pbext.interfaces.IDecoder.setPlainJelly)."},
    {"setPlainTypes", (PyCFunction)DecoderCore_setPlainTypes, METH_O,
     "setPlainTypes(types): in plain-jelly mode, build the registered "
     "types whose receive specs types holds too (see "
     "pbext.interfaces.IDecoder.setPlainTypes)."},
    {"setVocabulary", (PyCFunction)DecoderCore_setVocabulary, METH_O,
     "setVocabulary(vocabulary): as "
     "pbext.interfaces.IDecoder.setVocabulary."},
    {NULL}
};

static PyObject *
DecoderCore_getReceivingString(DecoderCore *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->longString != NULL && self->failure == NULL &&
                           !self->busy);
}

static PyGetSetDef DecoderCore_getset[] = {
    {"receivingString", (getter)DecoderCore_getReceivingString, NULL,
     "Whether the rest of a long string is arriving, to be received in "
     "place: receiveBuffer would give a buffer for it (and receiveFrom "
     "would read into it).", NULL},
    {"pendingBytes", (getter)DecoderCore_getPendingBytes, NULL,
     "As pbext.interfaces.IDecoder.pendingBytes.", NULL},
    {"wantedBytes", (getter)DecoderCore_getWantedBytes, NULL,
     "As pbext.interfaces.IDecoder.wantedBytes.", NULL},
    {"messageStarted", (getter)DecoderCore_getMessageStarted, NULL,
     "As pbext.interfaces.IDecoder.messageStarted.", NULL},
    {NULL}
};

static PyTypeObject DecoderCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbext._speedups.DecoderCore",
    .tp_doc = "The parser of pbext.codec.AcceleratedDecoder (its "
              "subclass), in C: the same limits, "
              "the same objects, the same errors.",
    .tp_basicsize = sizeof(DecoderCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)DecoderCore_init,
    .tp_dealloc = (destructor)DecoderCore_dealloc,
    .tp_traverse = (traverseproc)DecoderCore_traverse,
    .tp_clear = (inquiry)DecoderCore_clear,
    .tp_methods = DecoderCore_methods,
    .tp_getset = DecoderCore_getset,
};

/* ------------------------------------------------------------------ */
/* jellyPlain                                                          */
/* ------------------------------------------------------------------ */



static PyObject *
pair(PyObject *first, PyObject *second)
{
    /* Steals second. */
    if (second == NULL) {
        return NULL;
    }
    PyObject *list = newList(2);
    if (list == NULL) {
        Py_DECREF(second);
        return NULL;
    }
    Py_INCREF(first);
    PyList_SET_ITEM(list, 0, first);
    PyList_SET_ITEM(list, 1, second);
    return list;
}

static PyObject *jellyNode(PyObject *obj, Seen *seen);
static PyObject *jellyMember(PyObject *obj, Seen *seen);

/* The jelly of an object of a registered class, as its spec says (see
 * pbext._jelly._jellyTyped); NOT_PLAIN_C if it is not plain. */
/* A classic pb.Copyable, as Copyable.jellyFor writes it: [wireName,
 * its __dict__ jellied]. */
static PyObject *
jellyClassic(PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already) {
        return already < 0 ? NULL : NOT_PLAIN_C;
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? NULL : NOT_PLAIN_C;
    }
    PyObject *result = classicState(obj, spec, &seen->classic);
    if (result != NULL && result != NOT_PLAIN_C) {
        PyObject *state = result;
        result = jellyNode(state, seen);
        Py_DECREF(state);
        if (result != NULL && result != NOT_PLAIN_C) {
            result = pair(PyTuple_GET_ITEM(spec, 0), result);
        }
    }
    leaveLevel(seen);
    return result;
}

static PyObject *
jellyTyped(PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already) {
        return already < 0 ? NULL : NOT_PLAIN_C;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, 1));
    int version = versioned(PyTuple_GET_ITEM(spec, 2));
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? NULL : NOT_PLAIN_C;
    }
    PyObject *result = NULL;
    PyObject *state = newList(1 + n + version);
    if (state == NULL) {
        goto out;
    }
    Py_INCREF(s_dictionary);
    PyList_SET_ITEM(state, 0, s_dictionary);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *key;
        PyObject *value = typedField(obj, spec, i, &name, &key);
        if (value == NULL) {
            goto fail;
        }
        if (value == NOT_PLAIN_C) {
            result = NOT_PLAIN_C;
            goto fail;
        }
        PyObject *v = jellyMember(value, seen);
        Py_DECREF(value);
        if (v == NULL || v == NOT_PLAIN_C) {
            result = v;
            goto fail;
        }
        Py_INCREF(key);
        PyObject *k = pair(s_unicode, key);
        if (k == NULL) {
            Py_DECREF(v);
            goto fail;
        }
        PyObject *entry = newList(2);
        if (entry == NULL) {
            Py_DECREF(k);
            Py_DECREF(v);
            goto fail;
        }
        PyList_SET_ITEM(entry, 0, k);
        PyList_SET_ITEM(entry, 1, v);
        PyList_SET_ITEM(state, i + 1, entry);
    }
    if (version) {
        PyObject *k = pair(s_unicode, PyUnicode_AsUTF8String(VersionKey));
        PyObject *v = PyTuple_GET_ITEM(spec, 2);
        Py_INCREF(v);
        PyObject *entry = k == NULL ? (Py_DECREF(v), NULL) : pair(k, v);
        Py_XDECREF(k);
        if (entry == NULL) {
            goto fail;
        }
        PyList_SET_ITEM(state, n + 1, entry);
    }
    result = pair(PyTuple_GET_ITEM(spec, 0), state);
    goto out;
fail:
    Py_XDECREF(state);
out:
    leaveLevel(seen);
    return result;
}

/* A dictionary entry's key or value (made in that order, the value only
 * if the key was) failed: release what was made, and return NOT_PLAIN_C
 * if either stepped aside, or NULL for an error. */
static PyObject *
pairFailed(PyObject *key, PyObject *value)
{
    PyObject *outcome = (key == NOT_PLAIN_C || value == NOT_PLAIN_C)
                            ? NOT_PLAIN_C
                            : NULL;
    if (key != NOT_PLAIN_C) {
        Py_XDECREF(key);
    }
    if (value != NOT_PLAIN_C) {
        Py_XDECREF(value);
    }
    return outcome;
}

/* The jelly of a str. */
static inline PyObject *
jellyStr(PyObject *obj)
{
    return pair(s_unicode, PyUnicode_AsUTF8String(obj));
}

/* A dictionary key or value, or a sequence item. */
static PyObject *
jellyMember(PyObject *obj, Seen *seen)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyUnicode_Type) {
        return jellyStr(obj);
    }
    if (kind == &PyBytes_Type || kind == &PyLong_Type ||
        kind == &PyFloat_Type) {
        Py_INCREF(obj);
        return obj;
    }
    return jellyNode(obj, seen);
}

static PyObject *
jellyNode(PyObject *obj, Seen *seen)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyUnicode_Type) {
        return jellyStr(obj);
    }
    if (kind == &PyBytes_Type || kind == &PyLong_Type ||
        kind == &PyFloat_Type) {
        Py_INCREF(obj);
        return obj;
    }
    if (obj == Py_None) {
        PyObject *list = newList(1);
        if (list != NULL) {
            Py_INCREF(s_None);
            PyList_SET_ITEM(list, 0, s_None);
        }
        return list;
    }
    if (kind == &PyBool_Type) {
        PyObject *word = obj == Py_True ? s_true : s_false;
        Py_INCREF(word);
        return pair(s_boolean, word);
    }
    PyObject *tag;
    if (kind == &PyDict_Type) {
        tag = s_dictionary;
    }
    else if (kind == &PyList_Type) {
        tag = s_list;
    }
    else if (kind == &PyTuple_Type) {
        tag = s_tuple;
    }
    else if (kind == &PySet_Type) {
        tag = s_set;
    }
    else if (kind == &PyFrozenSet_Type) {
        tag = s_frozenset;
    }
    else {
        PyObject *spec = sendSpecOf(seen, obj);
        if (spec != NULL) {
            PyObject *result = PyTuple_GET_SIZE(spec) == 2
                                   ? jellyClassic(obj, spec, seen)
                                   : jellyTyped(obj, spec, seen);
            Py_DECREF(spec);
            return result;
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (seen->wrap) {
            /* A value the decoder built (a registered type): handed to
             * the full unjellier as it is. */
            Py_INCREF(obj);
            return pair(Prebuilt, obj);
        }
        return NOT_PLAIN_C;
    }
    int already = seenAdd(seen, obj);
    if (already < 0) {
        return NULL;
    }
    if (already) {
        return NOT_PLAIN_C;
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? NULL : NOT_PLAIN_C;
    }
    PyObject *sexp = NULL;
    if (kind == &PyDict_Type) {
        sexp = newList(1 + PyDict_GET_SIZE(obj));
        if (sexp == NULL) {
            goto out;
        }
        Py_INCREF(tag);
        PyList_SET_ITEM(sexp, 0, tag);
        Py_ssize_t index = 1;
        PyObject *key, *value;
        DictWalk walk;
        dictWalkStart(&walk, obj);
        int more;
        while ((more = dictWalkNext(&walk, &key, &value)) > 0) {
            PyObject *k = jellyMember(key, seen);
            PyObject *v = (k == NULL || k == NOT_PLAIN_C)
                              ? NULL
                              : jellyMember(value, seen);
            Py_DECREF(key);
            Py_DECREF(value);
            if (k == NULL || k == NOT_PLAIN_C || v == NULL ||
                v == NOT_PLAIN_C) {
                Py_CLEAR(sexp);
                sexp = pairFailed(k, v);
                goto out;
            }
            PyObject *entry = newList(2);
            if (entry == NULL) {
                Py_DECREF(k);
                Py_DECREF(v);
                Py_CLEAR(sexp);
                goto out;
            }
            PyList_SET_ITEM(entry, 0, k);
            PyList_SET_ITEM(entry, 1, v);
            /* dictWalkNext gives no more entries than the list has room
             * for. */
            PyList_SET_ITEM(sexp, index, entry);
            index++;
        }
        if (more < 0) {
            Py_CLEAR(sexp);
        }
        goto out;
    }
    if (kind == &PyTuple_Type) {
        /* A tuple cannot change, and holds its items. */
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        sexp = newList(1 + n);
        if (sexp == NULL) {
            goto out;
        }
        Py_INCREF(tag);
        PyList_SET_ITEM(sexp, 0, tag);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *j = jellyMember(PyTuple_GET_ITEM(obj, i), seen);
            if (j == NULL || j == NOT_PLAIN_C) {
                Py_CLEAR(sexp);
                sexp = j;
                goto out;
            }
            PyList_SET_ITEM(sexp, i + 1, j);
        }
        goto out;
    }
    if (kind == &PyList_Type) {
        /* A registered object's field may change the list: its length is
         * read afresh before each item, as Python's iterator does (the
         * Python twin iterates with it), and it fails if it changed. */
        Py_ssize_t n = PyList_GET_SIZE(obj), i;
        sexp = newList(1 + n);
        if (sexp == NULL) {
            goto out;
        }
        Py_INCREF(tag);
        PyList_SET_ITEM(sexp, 0, tag);
        for (i = 0; i < PyList_GET_SIZE(obj); i++) {
            PyObject *item = PyList_GET_ITEM(obj, i);
            Py_INCREF(item);
            PyObject *j = jellyMember(item, seen);
            Py_DECREF(item);
            if (j == NULL || j == NOT_PLAIN_C) {
                Py_CLEAR(sexp);
                sexp = j;
                goto out;
            }
            if (i < n) {
                PyList_SET_ITEM(sexp, i + 1, j);
            }
            else {
                /* Grown: it fails below, unless a later item is not
                 * plain. */
                Py_DECREF(j);
            }
        }
        if (i != n || PyList_GET_SIZE(obj) != n) {
            changedDuringWalk("list");
            Py_CLEAR(sexp);
        }
        goto out;
    }
    /* set, frozenset: through their own iterator, which fails if the set
     * changes size; one that changes keeping its size may give another
     * number of members. */
    sexp = newList(1);
    if (sexp == NULL) {
        goto out;
    }
    Py_INCREF(tag);
    PyList_SET_ITEM(sexp, 0, tag);
    Py_ssize_t n = PySet_GET_SIZE(obj);
    {
        PyObject *iterator = PyObject_GetIter(obj);
        if (iterator == NULL) {
            Py_CLEAR(sexp);
            goto out;
        }
        PyObject *element;
        while ((element = PyIter_Next(iterator)) != NULL) {
            PyObject *j = jellyMember(element, seen);
            Py_DECREF(element);
            if (j == NULL || j == NOT_PLAIN_C) {
                Py_CLEAR(sexp);
                sexp = j;
                break;
            }
            int rc = PyList_Append(sexp, j);
            Py_DECREF(j);
            if (rc < 0) {
                Py_CLEAR(sexp);
                break;
            }
        }
        Py_DECREF(iterator);
        if (sexp != NULL && sexp != NOT_PLAIN_C) {
            if (PyErr_Occurred()) {
                Py_CLEAR(sexp);
            }
            else if (PyList_GET_SIZE(sexp) != n + 1) {
                changedDuringWalk(kind == &PySet_Type ? "set" : "frozenset");
                Py_CLEAR(sexp);
            }
        }
    }
out:
    leaveLevel(seen);
    return sexp;
}

/* The plain jelly of obj (a new reference), writing the registered
 * classes of types (or none if NULL) too, NOT_PLAIN_C if it is not
 * plain, or NULL on error; atoms need no identity set. */
static PyObject *
jellyTree(PyObject *obj, PyObject *types)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyBytes_Type || kind == &PyLong_Type ||
        kind == &PyFloat_Type) {
        Py_INCREF(obj);
        return obj;
    }
    Seen seen;
    if (seenInit(&seen) < 0) {
        return NULL;
    }
    seen.types = types;
    PyObject *sexp = jellyNode(obj, &seen);
    seenRelease(&seen);
    return sexp;
}

/* What jellyPlain and unjellyPlain return for a result of the plain walk:
 * NOT_PLAIN where the walk stepped aside or went too deep. */
static PyObject *
answerPlain(PyObject *result)
{
    if (result == NOT_PLAIN_C ||
        (result == NULL && PyErr_ExceptionMatches(PyExc_RecursionError))) {
        PyErr_Clear();
        Py_INCREF(NotPlain);
        return NotPlain;
    }
    return result;
}

PyDoc_STRVAR(jellyPlain_doc,
"jellyPlain(obj, types=None)\n\n"
"The accelerated pbext._jelly.jellyPlain: the same expression, or\n"
"NOT_PLAIN where the full jellier is needed.  types holds the send\n"
"specs of the registered classes to write too.");

/* The arguments (value, types=None) of jellyPlain, unjellyPlain and
 * isPlain: types is NULL for None, else a dict. */
static int
valueAndTypes(const char *function, PyObject *const *args, Py_ssize_t nargs,
              PyObject **value, PyObject **types)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes 1 or 2 positional arguments (%zd given)",
                     function, nargs);
        return -1;
    }
    *value = args[0];
    *types = nargs == 2 && args[1] != Py_None ? args[1] : NULL;
    if (*types != NULL && !PyDict_CheckExact(*types)) {
        PyErr_Format(PyExc_TypeError, "%s(): types must be a dict or None",
                     function);
        return -1;
    }
    return 0;
}

static PyObject *
speedups_jellyPlain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *obj, *types;
    if (checkConfigured() < 0 ||
        valueAndTypes("jellyPlain", args, nargs, &obj, &types) < 0) {
        return NULL;
    }
    return answerPlain(jellyTree(obj, types));
}

/* ------------------------------------------------------------------ */
/* Jellied: plain jelly written straight to banana                     */
/* ------------------------------------------------------------------ */

/*
 * encode() writes a Jellied(value) as it would write jellyPlain(value),
 * without building that expression: no lists, no UTF-8 copies of ASCII
 * text.  If value turns out not to be plain, encode() raises NotPlainError
 * and its caller (pbext's broker) jellies the value the ordinary way.
 */


static PyObject *NotPlainError = NULL;

static PyObject *
Jellied_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"value", "types", NULL};
    PyObject *value, *types = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:Jellied", keywords,
                                     &value, &types)) {
        return NULL;
    }
    if (types != Py_None && !PyDict_CheckExact(types)) {
        PyErr_SetString(PyExc_TypeError, "Jellied(): types must be a dict or None");
        return NULL;
    }
    Jellied *self = (Jellied *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(value);
    self->value = value;
    if (types != Py_None) {
        Py_INCREF(types);
        self->types = types;
    }
    return (PyObject *)self;
}

static int
Jellied_traverse(Jellied *self, visitproc visit, void *arg)
{
    Py_VISIT(self->value);
    Py_VISIT(self->types);
    return 0;
}

static int
Jellied_clear(Jellied *self)
{
    Py_CLEAR(self->value);
    Py_CLEAR(self->types);
    return 0;
}

static void
Jellied_dealloc(Jellied *self)
{
    PyObject_GC_UnTrack(self);
    Jellied_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef Jellied_members[] = {
    {"value", T_OBJECT, offsetof(Jellied, value), READONLY,
     "The plain value."},
    {NULL}
};

static PyTypeObject JelliedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbext._speedups.Jellied",
    .tp_doc = "Jellied(value, types=None): a plain value.  encode() writes "
              "it as it would write jellyPlain(value, types) (or raises "
              "NotPlainError if it is not plain); a decoder in plain-jelly "
              "mode delivers plain values inside messages in it.",
    .tp_basicsize = sizeof(Jellied),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Jellied_new,
    .tp_dealloc = (destructor)Jellied_dealloc,
    .tp_traverse = (traverseproc)Jellied_traverse,
    .tp_clear = (inquiry)Jellied_clear,
    .tp_members = Jellied_members,
};

enum { W_UNICODE, W_NONE, W_BOOLEAN, W_TRUE, W_FALSE, W_DICTIONARY, W_LIST,
       W_TUPLE, W_SET, W_FROZENSET };

/* Write one of jelly's words, as encodeBytes would write it, from a
 * per-encoding cache. */
static int
writeWord(Encoder *e, int which)
{
    if (e->tagLength[which] < 0) {
        PyObject *words[] = {s_unicode, s_None, s_boolean, s_true, s_false,
                             s_dictionary, s_list, s_tuple, s_set,
                             s_frozenset};
        Py_ssize_t mark = e->size;
        Py_ssize_t limit = e->limit;
        e->limit = PY_SSIZE_T_MAX;
        int rc = encodeBytes(e, words[which]);
        e->limit = limit;
        if (rc < 0) {
            return -1;
        }
        Py_ssize_t length = e->size - mark;
        if (length > 16) {
            PyErr_SetString(PyExc_ValueError, "vocabulary number too large");
            return -1;
        }
        memcpy(e->tagBytes[which], e->data + mark, length);
        e->tagLength[which] = (signed char)length;
        return checkRoom(e);
    }
    /* A fixed-size copy of the whole slot (a variable one of a few bytes
     * costs more than the copy itself). */
    if (encoderReserve(e, sizeof(e->tagBytes[which])) < 0) {
        return -1;
    }
    memcpy(e->data + e->size, e->tagBytes[which], sizeof(e->tagBytes[which]));
    e->size += e->tagLength[which];
    return checkRoom(e);
}

static int
notPlainError(void)
{
    PyErr_SetString(NotPlainError, "not a plain value");
    return -1;
}


/* The bit of the word filter for a word of size bytes (1 to 63) starting
 * and ending with first and last. */
static inline unsigned int
wordBit(unsigned char first, unsigned char last, Py_ssize_t size)
{
    return ((unsigned int)first * 131u + (unsigned int)last * 17u +
            (unsigned int)size * 7u) & (WORD_FILTER_BITS - 1);
}

/* Whether an ASCII text could be one of the vocabulary's words (which
 * encodeBytes writes as a vocabulary token): a quick test of its length,
 * first and last bytes against the words'.  A text that passes is looked
 * up; one that fails is surely no word. */
static int
mayBeWord(Encoder *e, const void *data, Py_ssize_t size)
{
    if (e->vocabulary == NULL) {
        return 0;
    }
    if (!e->filterReady) {
        memset(e->wordBits, 0, sizeof(e->wordBits));
        e->everyText = 0;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(e->vocabulary, &pos, &key, &value)) {
            if (!PyBytes_Check(key)) {
                continue;
            }
            Py_ssize_t n = PyBytes_GET_SIZE(key);
            if (n == 0 || n >= 64) {
                /* Unusual words: look every text up. */
                e->everyText = 1;
                break;
            }
            const unsigned char *word =
                (const unsigned char *)PyBytes_AS_STRING(key);
            unsigned int bit = wordBit(word[0], word[n - 1], n);
            e->wordBits[bit >> 3] |= (unsigned char)(1u << (bit & 7));
        }
        e->filterReady = 1;
    }
    if (e->everyText) {
        return 1;
    }
    if (size == 0 || size >= 64) {
        return 0;
    }
    const unsigned char *text = (const unsigned char *)data;
    unsigned int bit = wordBit(text[0], text[size - 1], size);
    return (e->wordBits[bit >> 3] >> (bit & 7)) & 1;
}

static int encodableText(PyObject *text);

static int
writeText(Encoder *e, PyObject *text)
{
    if (e->tagLength[W_UNICODE] >= 0 && PyUnicode_IS_ASCII(text)) {
        Py_ssize_t size = PyUnicode_GET_LENGTH(text);
        const char *chars = (const char *)PyUnicode_DATA(text);
        if (size <= sizeLimit && !mayBeWord(e, chars, size)) {
            /* The commonest case, written in one go: the list header,
             * the b"unicode" word (a fixed-size copy of its slot), the
             * string's header and its bytes. */
            if (encoderReserve(e, 2 + sizeof(e->tagBytes[0]) + 11 + size) <
                0) {
                return -1;
            }
            char *out = putToken(e->data + e->size, 2, B_LIST);
            memcpy(out, e->tagBytes[W_UNICODE], sizeof(e->tagBytes[0]));
            out = putToken(out + e->tagLength[W_UNICODE], (uint64_t)size,
                           B_STRING);
            Py_ssize_t written = (out - e->data) + size;
            /* The same error writeToken, writeWord and writeRaw would
             * give, at the first check that failed. */
            if (e->flushed + written > e->limit) {
                return tooLarge(e);
            }
            memcpy(out, chars, size);
            e->size = written;
            return 0;
        }
    }
    /* [b"unicode", utf8]: a two-element list. */
    if (writeToken(e, 2, B_LIST) < 0 || writeWord(e, W_UNICODE) < 0) {
        return -1;
    }
    if (PyUnicode_IS_ASCII(text) &&
        !mayBeWord(e, PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text))) {
        Py_ssize_t size = PyUnicode_GET_LENGTH(text);
        if (size > sizeLimit) {
            PyErr_Format(BananaError, "byte string is too long to send (%zd)",
                         size);
            return -1;
        }
        if (writeToken(e, (uint64_t)size, B_STRING) < 0) {
            return -1;
        }
        if (e->flushed + e->size + size > e->limit) {
            return tooLarge(e);
        }
        return writeRaw(e, (const char *)PyUnicode_DATA(text), size);
    }
    /* Not ASCII, or perhaps a vocabulary word: written as any byte
     * string (encodeBytes looks the word up); not plain if UTF-8 cannot
     * encode it (as checkPlain says). */
    if (!encodableText(text)) {
        return notPlainError();
    }
    PyObject *raw = PyUnicode_AsUTF8String(text);
    if (raw == NULL) {
        return -1;
    }
    int rc = encodeBytes(e, raw);
    Py_DECREF(raw);
    return rc;
}

static int writeJelly(Encoder *e, PyObject *obj, Seen *seen);
static int writeMember(Encoder *e, PyObject *obj, Seen *seen);

/* Strings longer than this in a registered type's header or keys are not
 * kept by typedBytes. */
#define TYPED_BYTES_LONGEST 1024

/*
 * Keep the bytes written from mark on as the encoder's template for spec,
 * with *offsets (n + 2 of them: where each of the n keys starts, the last
 * filled in here) and *keys (the keys of the state they were made for, a
 * tuple, for a classic copy; NULL for a registered type).  Both are taken
 * over on success (*offsets and *keys set to NULL).  Returns 1, or -1 on
 * error.
 */
static int
keepTemplate(Encoder *e, PyObject *spec, Py_ssize_t mark,
             Py_ssize_t **offsets, Py_ssize_t n, PyObject **keys)
{
    (*offsets)[n + 1] = e->size - mark;
    PyObject *bytes = PyBytes_FromStringAndSize(e->data + mark,
                                                e->size - mark);
    if (bytes == NULL) {
        return -1;
    }
    Py_INCREF(spec);
    Py_XSETREF(e->typedSpec, spec);
    Py_XSETREF(e->typedBytes, bytes);
    Py_XSETREF(e->typedKeys, *keys);
    *keys = NULL;
    PyMem_Free(e->typedOffsets);
    e->typedOffsets = *offsets;
    *offsets = NULL;
    e->typedFields = n;
    return 1;
}

/*
 * The bytes every object of a registered class starts with, and those of
 * each field's key, as writeTyped writes them for this encoding (they
 * depend on its vocabulary): kept for the last class written, since a
 * message usually holds many objects of one class.  They are written once
 * where the object would go, copied, and the output is cut back.
 * Returns 1 when e->typedBytes holds them, 0 when they are not kept (long
 * strings), -1 on error.
 */
static int
typedBytes(Encoder *e, PyObject *spec)
{
    if (e->typedSpec == spec) {
        return 1;
    }
    PyObject *tag = PyTuple_GET_ITEM(spec, 0);
    PyObject *fields = PyTuple_GET_ITEM(spec, 1);
    Py_ssize_t n = PyTuple_GET_SIZE(fields);
    if (PyBytes_GET_SIZE(tag) > TYPED_BYTES_LONGEST) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *key;
        if (specField(spec, i, &name, &key) < 0) {
            return -1;
        }
        if (PyUnicode_GET_LENGTH(name) > TYPED_BYTES_LONGEST / 4) {
            return 0;
        }
    }
    Py_ssize_t *offsets = PyMem_Malloc((n + 2) * sizeof(Py_ssize_t));
    if (offsets == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int version = versioned(PyTuple_GET_ITEM(spec, 2));
    Py_ssize_t mark = e->size;
    Py_ssize_t limit = e->limit;
    e->limit = PY_SSIZE_T_MAX;
    int rc = -1;
    if (writeToken(e, 2, B_LIST) < 0 || encodeBytes(e, tag) < 0 ||
        writeToken(e, (uint64_t)(n + 1 + version), B_LIST) < 0 ||
        writeWord(e, W_DICTIONARY) < 0) {
        goto out;
    }
    offsets[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *key;
        offsets[i + 1] = e->size - mark;
        /* The key is the name's UTF-8: written as [b"unicode", key]. */
        if (specField(spec, i, &name, &key) < 0 ||
            writeToken(e, 2, B_LIST) < 0 || writeText(e, name) < 0) {
            goto out;
        }
    }
    PyObject *noKeys = NULL;
    rc = keepTemplate(e, spec, mark, &offsets, n, &noKeys);
out:
    PyMem_Free(offsets);
    e->size = mark;
    e->limit = limit;
    return rc;
}

/* Write bytes kept by typedBytes, from offset start to stop. */
static inline int
writeKept(Encoder *e, Py_ssize_t start, Py_ssize_t stop)
{
    if (writeRaw(e, PyBytes_AS_STRING(e->typedBytes) + start, stop - start) <
        0) {
        return -1;
    }
    return checkRoom(e);
}

/*
 * typedBytes for a classic copy (spec its send spec) whose state is the
 * dict state: the bytes it starts with, [wireName, [b"dictionary", then
 * those of each key, as writeJelly writes them, kept with the keys (the
 * same strs: the instances of a class usually share them).  Returns 1
 * when the encoder holds them, with the state's values in values (new
 * references, in order), 0 when they are not kept (many keys, keys that
 * are not short ASCII strs), -1 on error.
 */
static int keepClassicBytes(Encoder *e, PyObject *spec, PyObject **keys,
                            Py_ssize_t n);

static int
classicBytes(Encoder *e, PyObject *spec, PyObject *state, PyObject **values)
{
    PyObject *tag = PyTuple_GET_ITEM(spec, 0);
    Py_ssize_t n = PyDict_GET_SIZE(state);
    if (n > CLASSIC_KEYS || PyBytes_GET_SIZE(tag) > TYPED_BYTES_LONGEST) {
        return 0;
    }
    /* One walk: the keys compared with those kept, the values taken (no
     * code runs meanwhile). */
    PyObject *keys[CLASSIC_KEYS];
    PyObject *kept = e->typedSpec == spec ? e->typedKeys : NULL;
    int same = kept != NULL && PyTuple_GET_SIZE(kept) == n;
    Py_ssize_t pos = 0, i = 0;
    PyObject *key, *value;
    while (i < n && PyDict_Next(state, &pos, &key, &value)) {
        same = same && key == PyTuple_GET_ITEM(kept, i);
        keys[i] = key;
        values[i++] = value;
    }
    if (!same) {
        for (i = 0; i < n; i++) {
            if (!PyUnicode_CheckExact(keys[i]) ||
                !PyUnicode_IS_ASCII(keys[i]) ||
                PyUnicode_GET_LENGTH(keys[i]) > TYPED_BYTES_LONGEST / 4) {
                return 0;
            }
        }
        int rc = keepClassicBytes(e, spec, keys, n);
        if (rc <= 0) {
            return rc;
        }
    }
    for (i = 0; i < n; i++) {
        Py_INCREF(values[i]);
    }
    return 1;
}

/* Make the bytes classicBytes keeps for the n keys. */
static int
keepClassicBytes(Encoder *e, PyObject *spec, PyObject **keys, Py_ssize_t n)
{
    PyObject *keyTuple = PyTuple_New(n);
    if (keyTuple == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(keys[i]);
        PyTuple_SET_ITEM(keyTuple, i, keys[i]);
    }
    Py_ssize_t *offsets = PyMem_Malloc((n + 2) * sizeof(Py_ssize_t));
    if (offsets == NULL) {
        Py_DECREF(keyTuple);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t mark = e->size;
    Py_ssize_t limit = e->limit;
    e->limit = PY_SSIZE_T_MAX;
    int rc = -1;
    if (writeToken(e, 2, B_LIST) < 0 ||
        encodeBytes(e, PyTuple_GET_ITEM(spec, 0)) < 0 ||
        writeToken(e, (uint64_t)(n + 1), B_LIST) < 0 ||
        writeWord(e, W_DICTIONARY) < 0) {
        goto out;
    }
    offsets[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        offsets[i + 1] = e->size - mark;
        if (writeToken(e, 2, B_LIST) < 0 ||
            writeText(e, PyTuple_GET_ITEM(keyTuple, i)) < 0) {
            goto out;
        }
    }
    rc = keepTemplate(e, spec, mark, &offsets, n, &keyTuple);
out:
    Py_XDECREF(keyTuple);
    PyMem_Free(offsets);
    e->size = mark;
    e->limit = limit;
    return rc;
}

/*
 * Write a classic copy whose state's keys classicBytes keeps, its n
 * values (new references, released here) taken from the state: the
 * bytes writeJelly writes for the state, but those around its values
 * copied.  A value may run code, which may change the state: if its size
 * changes the encoding fails, as writeJelly's does (and other changes
 * are not seen: what is written is the state as it was).
 */
static int
writeClassicState(Encoder *e, PyObject *state, PyObject **values,
                  Py_ssize_t n, Seen *seen)
{
    /* Held: writing a value may make the encoder keep other bytes. */
    PyObject *keys = e->typedKeys;
    Py_INCREF(keys);
    int rc = -1;
    Py_ssize_t i = 0;
    int already = seenAdd(seen, state);
    if (already) {
        if (already > 0) {
            notPlainError();
        }
        goto out;
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        if (entered == 0) {
            notPlainError();
        }
        goto out;
    }
    int failed = writeKept(e, 0, e->typedOffsets[1]) < 0;
    for (; !failed && i < n; i++) {
        if (PyDict_GET_SIZE(state) != n) {
            failed = dictChanged("dictionary changed size during iteration");
        }
        else if (e->typedKeys == keys) {
            failed = writeKept(e, e->typedOffsets[i + 1],
                               e->typedOffsets[i + 2]) < 0;
        }
        else {
            failed = writeToken(e, 2, B_LIST) < 0 ||
                     writeText(e, PyTuple_GET_ITEM(keys, i)) < 0;
        }
        failed = failed || writeMember(e, values[i], seen) < 0;
        Py_DECREF(values[i]);
    }
    if (!failed && PyDict_GET_SIZE(state) != n) {
        failed = dictChanged("dictionary changed size during iteration");
    }
    rc = failed ? -1 : 0;
    leaveLevel(seen);
out:
    for (; i < n; i++) {
        Py_DECREF(values[i]);
    }
    Py_DECREF(keys);
    return rc;
}

/* Write an object of a registered class as its spec says (see
 * pbext._jelly._jellyTyped). */
/* Write a classic pb.Copyable as jellyClassic makes it. */
static int
writeClassic(Encoder *e, PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already) {
        return already < 0 ? -1 : notPlainError();
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? -1 : notPlainError();
    }
    int rc = -1;
    PyObject *state = classicState(obj, spec, &seen->classic);
    if (state == NOT_PLAIN_C) {
        notPlainError();
    }
    else if (state != NULL) {
        PyObject *values[CLASSIC_KEYS];
        int kept = classicBytes(e, spec, state, values);
        if (kept > 0) {
            rc = writeClassicState(e, state, values,
                                   PyDict_GET_SIZE(state), seen);
        }
        else if (kept == 0) {
            rc = (writeToken(e, 2, B_LIST) < 0 ||
                  encodeBytes(e, PyTuple_GET_ITEM(spec, 0)) < 0 ||
                  writeJelly(e, state, seen) < 0) ? -1 : 0;
        }
        Py_DECREF(state);
    }
    leaveLevel(seen);
    return rc;
}

static int
writeTyped(Encoder *e, PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already) {
        return already < 0 ? -1 : notPlainError();
    }
    Py_ssize_t n = PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, 1));
    int version = versioned(PyTuple_GET_ITEM(spec, 2));
    if (n + 1 + version > sizeLimit) {
        PyErr_Format(BananaError, "list/tuple is too long to send (%zd)",
                     n + 1 + version);
        return -1;
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? -1 : notPlainError();
    }
    int rc = -1;
    int kept = typedBytes(e, spec);
    if (kept < 0) {
        goto out;
    }
    if (kept) {
        if (writeKept(e, 0, e->typedOffsets[1]) < 0) {
            goto out;
        }
    }
    else if (writeToken(e, 2, B_LIST) < 0 ||
             encodeBytes(e, PyTuple_GET_ITEM(spec, 0)) < 0 ||
             writeToken(e, (uint64_t)(n + 1 + version), B_LIST) < 0 ||
             writeWord(e, W_DICTIONARY) < 0) {
        goto out;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name, *key;
        PyObject *value = typedField(obj, spec, i, &name, &key);
        if (value == NULL) {
            goto out;
        }
        if (value == NOT_PLAIN_C) {
            notPlainError();
            goto out;
        }
        /* typedBytes may have been remade for another class while the
         * value was read (a property's code may write one). */
        int failed;
        if (kept && e->typedSpec == spec) {
            failed = writeKept(e, e->typedOffsets[i + 1],
                               e->typedOffsets[i + 2]) < 0;
        }
        else {
            /* The key is the name's UTF-8: written as [b"unicode", key]. */
            failed = writeToken(e, 2, B_LIST) < 0 || writeText(e, name) < 0;
        }
        failed = failed || writeMember(e, value, seen) < 0;
        Py_DECREF(value);
        if (failed) {
            goto out;
        }
    }
    if (version) {
        if (writeToken(e, 2, B_LIST) < 0 || writeText(e, VersionKey) < 0 ||
            encodeInt(e, PyTuple_GET_ITEM(spec, 2)) < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    leaveLevel(seen);
    return rc;
}

static int
writeMember(Encoder *e, PyObject *obj, Seen *seen)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyUnicode_Type) {
        return writeText(e, obj);
    }
    if (kind == &PyBytes_Type) {
        return encodeBytes(e, obj);
    }
    if (kind == &PyLong_Type) {
        return encodeInt(e, obj);
    }
    if (kind == &PyFloat_Type) {
        return encodeFloat(e, obj);
    }
    return writeJelly(e, obj, seen);
}

static int
writeJelly(Encoder *e, PyObject *obj, Seen *seen)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyUnicode_Type || kind == &PyBytes_Type ||
        kind == &PyLong_Type || kind == &PyFloat_Type) {
        return writeMember(e, obj, seen);
    }
    if (obj == Py_None) {
        if (writeToken(e, 1, B_LIST) < 0) {
            return -1;
        }
        return writeWord(e, W_NONE);
    }
    if (kind == &PyBool_Type) {
        if (writeToken(e, 2, B_LIST) < 0 || writeWord(e, W_BOOLEAN) < 0) {
            return -1;
        }
        return writeWord(e, obj == Py_True ? W_TRUE : W_FALSE);
    }
    int tag;
    Py_ssize_t size;
    if (kind == &PyDict_Type) {
        tag = W_DICTIONARY;
        size = PyDict_GET_SIZE(obj);
    }
    else if (kind == &PyList_Type || kind == &PyTuple_Type) {
        tag = kind == &PyList_Type ? W_LIST : W_TUPLE;
        size = PySequence_Fast_GET_SIZE(obj);
    }
    else if (kind == &PySet_Type || kind == &PyFrozenSet_Type) {
        tag = kind == &PySet_Type ? W_SET : W_FROZENSET;
        size = PySet_GET_SIZE(obj);
    }
    else {
        PyObject *spec = sendSpecOf(seen, obj);
        if (spec == NULL) {
            return PyErr_Occurred() ? -1 : notPlainError();
        }
        int rc = PyTuple_GET_SIZE(spec) == 2 ? writeClassic(e, obj, spec, seen)
                                             : writeTyped(e, obj, spec, seen);
        Py_DECREF(spec);
        return rc;
    }
    int already = seenAdd(seen, obj);
    if (already < 0) {
        return -1;
    }
    if (already) {
        return notPlainError();
    }
    if (size + 1 > sizeLimit) {
        PyErr_Format(BananaError, "list/tuple is too long to send (%zd)",
                     size + 1);
        return -1;
    }
    if (e->size >= PLAIN_PIECE_CUT && (e->pieces != NULL || e->joinPieces)) {
        if (e->pieces == NULL && (e->pieces = PyList_New(0)) == NULL) {
            return -1;
        }
        if (flushPieceTo(e, PLAIN_PIECE) < 0) {
            return -1;
        }
    }
    int entered = enterLevel(seen, " while jellying");
    if (entered <= 0) {
        return entered < 0 ? -1 : notPlainError();
    }
    /* The header says size members: if the container changes while they
     * are written (a registered object's field may change it), the
     * encoding fails rather than disagree with its header. */
    int rc = -1;
    if (writeToken(e, (uint64_t)(size + 1), B_LIST) < 0 ||
        writeWord(e, tag) < 0) {
        goto out;
    }
    if (tag == W_DICTIONARY) {
        PyObject *key, *value;
        DictWalk walk;
        dictWalkStart(&walk, obj);
        int more;
        while ((more = dictWalkNext(&walk, &key, &value)) > 0) {
            int failed = writeToken(e, 2, B_LIST) < 0 ||
                         writeMember(e, key, seen) < 0 ||
                         writeMember(e, value, seen) < 0;
            Py_DECREF(key);
            Py_DECREF(value);
            if (failed) {
                goto out;
            }
        }
        if (more < 0) {
            goto out;
        }
    }
    else if (tag == W_TUPLE) {
        /* A tuple cannot change, and holds its items. */
        for (Py_ssize_t i = 0; i < size; i++) {
            if (writeMember(e, PyTuple_GET_ITEM(obj, i), seen) < 0) {
                goto out;
            }
        }
    }
    else if (tag == W_LIST) {
        Py_ssize_t i;
        for (i = 0; i < PyList_GET_SIZE(obj); i++) {
            PyObject *item = PyList_GET_ITEM(obj, i);
            Py_INCREF(item);
            int failed = writeMember(e, item, seen) < 0;
            Py_DECREF(item);
            if (failed) {
                goto out;
            }
        }
        if (i != size || PyList_GET_SIZE(obj) != size) {
            changedDuringWalk("list");
            goto out;
        }
    }
    else {
        /* Sets through their own iterator, which fails if the set
         * changes size. */
        PyObject *iterator = PyObject_GetIter(obj);
        if (iterator == NULL) {
            goto out;
        }
        PyObject *key;
        Py_ssize_t count = 0;
        while ((key = PyIter_Next(iterator)) != NULL) {
            int failed = writeMember(e, key, seen) < 0;
            Py_DECREF(key);
            if (failed) {
                Py_DECREF(iterator);
                goto out;
            }
            count++;
        }
        Py_DECREF(iterator);
        if (PyErr_Occurred()) {
            goto out;
        }
        if (count != size) {
            changedDuringWalk(tag == W_SET ? "set" : "frozenset");
            goto out;
        }
    }
    rc = 0;
out:
    leaveLevel(seen);
    return rc;
}

/* Whether a str is UTF-8 encodable: no lone surrogates. */
static int
encodableText(PyObject *text)
{
    int kind = PyUnicode_KIND(text);
    if (kind == PyUnicode_1BYTE_KIND) {
        return 1;
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0xD800 && c <= 0xDFFF) {
            return 0;
        }
    }
    return 1;
}

static int checkPlain(PyObject *obj, Seen *seen);

/* checkPlain for a classic pb.Copyable. */
static int
checkClassic(PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already != 0) {
        return already < 0 ? -1 : 0;
    }
    int entered = enterLevel(seen, " while checking a value");
    if (entered <= 0) {
        return entered;
    }
    int rc;
    PyObject *state = classicState(obj, spec, &seen->classic);
    if (state == NULL || state == NOT_PLAIN_C) {
        rc = state == NULL ? -1 : 0;
    }
    else {
        rc = checkPlain(state, seen);
        Py_DECREF(state);
    }
    leaveLevel(seen);
    return rc;
}

/* checkPlain for an object of a registered class. */
static int
checkTyped(PyObject *obj, PyObject *spec, Seen *seen)
{
    int already = seenAdd(seen, obj);
    if (already != 0) {
        return already < 0 ? -1 : 0;
    }
    int entered = enterLevel(seen, " while checking a value");
    if (entered <= 0) {
        return entered;
    }
    int rc = 1;
    Py_ssize_t n = PyTuple_GET_SIZE(PyTuple_GET_ITEM(spec, 1));
    for (Py_ssize_t i = 0; rc == 1 && i < n; i++) {
        PyObject *name, *key;
        PyObject *value = typedField(obj, spec, i, &name, &key);
        if (value == NULL) {
            rc = -1;
            break;
        }
        if (value == NOT_PLAIN_C) {
            rc = 0;
            break;
        }
        rc = checkPlain(value, seen);
        Py_DECREF(value);
    }
    leaveLevel(seen);
    return rc;
}

/* 1 if obj is plain (jellyPlain would answer, without raising), 0 if
 * not, -1 on error; 2 if it holds more values than seen->budget allows
 * looking at. */
static int
checkPlain(PyObject *obj, Seen *seen)
{
    if (--seen->budget < 0) {
        return 2;
    }
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind == &PyBytes_Type || kind == &PyLong_Type ||
        kind == &PyFloat_Type || kind == &PyBool_Type || obj == Py_None) {
        return 1;
    }
    if (kind == &PyUnicode_Type) {
        return encodableText(obj);
    }
    if (kind != &PyDict_Type && kind != &PyList_Type &&
        kind != &PyTuple_Type && kind != &PySet_Type &&
        kind != &PyFrozenSet_Type) {
        PyObject *spec = sendSpecOf(seen, obj);
        if (spec == NULL) {
            return PyErr_Occurred() ? -1 : 0;
        }
        int rc = PyTuple_GET_SIZE(spec) == 2 ? checkClassic(obj, spec, seen)
                                             : checkTyped(obj, spec, seen);
        Py_DECREF(spec);
        return rc;
    }
    int already = seenAdd(seen, obj);
    if (already != 0) {
        return already < 0 ? -1 : 0;
    }
    int entered = enterLevel(seen, " while checking a value");
    if (entered <= 0) {
        return entered;
    }
    int rc = 1;
    if (kind == &PyDict_Type) {
        PyObject *key, *value;
        DictWalk walk;
        dictWalkStart(&walk, obj);
        int more;
        while (rc == 1 && (more = dictWalkNext(&walk, &key, &value)) != 0) {
            if (more < 0) {
                rc = -1;
                break;
            }
            rc = checkPlain(key, seen);
            if (rc == 1) {
                rc = checkPlain(value, seen);
            }
            Py_DECREF(key);
            Py_DECREF(value);
        }
    }
    else if (kind == &PyTuple_Type) {
        /* A tuple cannot change, and holds its items. */
        Py_ssize_t size = PyTuple_GET_SIZE(obj);
        for (Py_ssize_t i = 0; rc == 1 && i < size; i++) {
            rc = checkPlain(PyTuple_GET_ITEM(obj, i), seen);
        }
    }
    else if (kind == &PyList_Type) {
        Py_ssize_t size = PyList_GET_SIZE(obj), i;
        for (i = 0; rc == 1 && i < PyList_GET_SIZE(obj); i++) {
            PyObject *item = PyList_GET_ITEM(obj, i);
            Py_INCREF(item);
            rc = checkPlain(item, seen);
            Py_DECREF(item);
        }
        if (rc == 1 && (i != size || PyList_GET_SIZE(obj) != size)) {
            rc = changedDuringWalk("list");
        }
    }
    else {
        Py_ssize_t size = PySet_GET_SIZE(obj), count = 0;
        PyObject *iterator = PyObject_GetIter(obj);
        if (iterator == NULL) {
            rc = -1;
        }
        else {
            PyObject *key;
            while (rc == 1 && (key = PyIter_Next(iterator)) != NULL) {
                rc = checkPlain(key, seen);
                Py_DECREF(key);
                count++;
            }
            Py_DECREF(iterator);
            if (rc == 1 && PyErr_Occurred()) {
                rc = -1;
            }
            if (rc == 1 && count != size) {
                rc = changedDuringWalk(kind == &PySet_Type ? "set"
                                                            : "frozenset");
            }
        }
    }
    leaveLevel(seen);
    return rc;
}

PyDoc_STRVAR(isPlain_doc,
"isPlain(obj, types=None) -> bool\n\n"
"Whether jellyPlain(obj, types) would give an expression (and not\n"
"NOT_PLAIN or an error), found without building it: then encode()\n"
"writes Jellied(obj, types) exactly as it writes jellyPlain(obj, types).");

/* checkPlain(value) with the send specs types (or NULL), looking at no
 * more than budget values; a value too deep to check is not plain. */
static int
checkValue(PyObject *value, PyObject *types, Py_ssize_t budget)
{
    Seen seen;
    if (seenInit(&seen) < 0) {
        return -1;
    }
    seen.types = types;
    seen.budget = budget;
    int rc = checkPlain(value, &seen);
    seenRelease(&seen);
    if (rc < 0 && PyErr_ExceptionMatches(PyExc_RecursionError)) {
        PyErr_Clear();
        rc = 0;
    }
    return rc;
}

static PyObject *
speedups_isPlain(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *obj, *types;
    if (valueAndTypes("isPlain", args, nargs, &obj, &types) < 0) {
        return NULL;
    }
    int rc = checkValue(obj, types, PY_SSIZE_T_MAX);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static int
encodeJellied(Encoder *e, PyObject *item)
{
    Seen seen;
    if (seenInit(&seen) < 0) {
        return -1;
    }
    /* Held while written: nothing else keeps them alive for sure. */
    PyObject *value = ((Jellied *)item)->value;
    PyObject *types = ((Jellied *)item)->types;
    Py_INCREF(value);
    Py_XINCREF(types);
    seen.types = types;
    int rc = writeJelly(e, value, &seen);
    seenRelease(&seen);
    Py_DECREF(value);
    Py_XDECREF(types);
    if (rc < 0 && PyErr_ExceptionMatches(PyExc_RecursionError)) {
        /* Too deep for the plain path: jellyPlain steps aside too. */
        PyErr_Clear();
        return notPlainError();
    }
    return rc;
}

/*
 * Encoded: a plain value encoded ahead of its message.  A broker about to
 * send a value learns whether it is plain by encoding it (encodeIfPlain),
 * instead of checking it first and encoding it later, which read every
 * field of every object twice; the message then carries the value's bytes
 * as they are.
 */
typedef struct {
    PyObject_HEAD
    PyObject *pieces;   /* list of bytes, as encodePieces makes them */
    Py_ssize_t size;    /* their total length */
} Encoded;

static void
Encoded_dealloc(Encoded *self)
{
    Py_XDECREF(self->pieces);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Encoded_getPieces(Encoded *self, void *Py_UNUSED(closure))
{
    return PyList_GetSlice(self->pieces, 0, PyList_GET_SIZE(self->pieces));
}

static PyObject *
Encoded_getSize(Encoded *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyGetSetDef Encoded_getset[] = {
    {"pieces", (getter)Encoded_getPieces, NULL,
     "A copy of the list of byte strings the value was encoded into.", NULL},
    {"size", (getter)Encoded_getSize, NULL, "Their total length.", NULL},
    {NULL}
};

static PyTypeObject EncodedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbext._speedups.Encoded",
    .tp_doc = "The banana bytes of a plain value, made by encodeIfPlain(); "
              "encode() and encodePieces() write them as they are where "
              "the Encoded stands in a message.",
    .tp_basicsize = sizeof(Encoded),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Encoded_dealloc,
    .tp_getset = Encoded_getset,
};

/* An Encoded's pieces longer than this stay pieces of their own in
 * encodePieces: a large value's bytes (a long string, or a big structure
 * encoded ahead) are sent as they are, not copied into the message. */
#define ENCODED_PIECE (16 * 1024)

/* Write an Encoded's bytes: copied, but for its long pieces, which stay
 * pieces of their own in encodePieces (see ENCODED_PIECE). */
static int
writeEncoded(Encoder *e, PyObject *item)
{
    Encoded *encoded = (Encoded *)item;
    if (e->flushed + e->size + encoded->size > e->limit) {
        return tooLarge(e);
    }
    Py_ssize_t count = PyList_GET_SIZE(encoded->pieces);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *piece = PyList_GET_ITEM(encoded->pieces, i);
        Py_ssize_t size = PyBytes_GET_SIZE(piece);
        if (e->pieces != NULL && size > ENCODED_PIECE) {
            if (flushPiece(e) < 0 || PyList_Append(e->pieces, piece) < 0) {
                return -1;
            }
            e->flushed += size;
        }
        else if (writeRaw(e, PyBytes_AS_STRING(piece), size) < 0) {
            return -1;
        }
    }
    return 0;
}

/* encodePieces(Jellied(value, types), vocabulary, limit) in an Encoded,
 * or None if value is not plain; NULL on any other error. */
static PyObject *
encodeAhead(PyObject *value, PyObject *types, PyObject *vocabulary,
            PyObject *limit)
{
    Encoder e;
    if (encoderStart(&e, vocabulary, limit, 1) < 0) {
        return NULL;
    }
    Seen seen;
    if (seenInit(&seen) < 0) {
        encoderFinish(&e, -1);
        return NULL;
    }
    seen.types = types;
    int rc = writeJelly(&e, value, &seen);
    seenRelease(&seen);
    if (rc < 0 && PyErr_ExceptionMatches(BananaError)) {
        /* Too large to send, or a number banana cannot send, met before
         * the walk reached what is not plain, if anything is: a value
         * that is not plain is None (its full jelly may well be sent),
         * whatever error writing it met first. */
        PyObject *type, *error, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        int plain = checkValue(value, types, PY_SSIZE_T_MAX);
        if (plain == 1) {
            PyErr_Restore(type, error, traceback);
        }
        else {
            Py_XDECREF(type);
            Py_XDECREF(error);
            Py_XDECREF(traceback);
            if (plain == 0) {
                encoderFinish(&e, -1);
                Py_RETURN_NONE;
            }
        }
    }
    else if (rc < 0 && (PyErr_ExceptionMatches(NotPlainError) ||
                        PyErr_ExceptionMatches(PyExc_RecursionError))) {
        /* Not plain, or too deep for the stack (where jellyPlain steps
         * aside too). */
        PyErr_Clear();
        encoderFinish(&e, -1);
        Py_RETURN_NONE;
    }
    PyObject *pieces = encoderFinish(&e, rc);
    if (pieces == NULL) {
        return NULL;
    }
    Encoded *encoded = PyObject_New(Encoded, &EncodedType);
    if (encoded == NULL) {
        Py_DECREF(pieces);
        return NULL;
    }
    encoded->pieces = pieces;
    encoded->size = e.flushed;
    return (PyObject *)encoded;
}

/* The four arguments (value, types, vocabulary, maxMessageBytes) of
 * encodeIfPlain and preparePlain; types is NULL for None. */
static int
aheadArguments(const char *function, PyObject *const *args, Py_ssize_t nargs,
               PyObject **value, PyObject **types)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError,
                     "%s() takes 4 positional arguments (%zd given)",
                     function, nargs);
        return -1;
    }
    return valueAndTypes(function, args, 2, value, types);
}

PyDoc_STRVAR(encodeIfPlain_doc,
"encodeIfPlain(value, types, vocabulary, maxMessageBytes) -> Encoded | None\n\n"
"Encode value as encodePieces(Jellied(value, types), vocabulary,\n"
"maxMessageBytes) would, in an Encoded, or answer None where that would\n"
"raise NotPlainError (value is not plain).  Other errors (a value too\n"
"large to send) are raised.");

static PyObject *
speedups_encodeIfPlain(PyObject *Py_UNUSED(module), PyObject *const *args,
                       Py_ssize_t nargs)
{
    PyObject *value, *types;
    if (aheadArguments("encodeIfPlain", args, nargs, &value, &types) < 0) {
        return NULL;
    }
    return encodeAhead(value, types, args[2], args[3]);
}

/* How many values preparePlain looks at before it encodes instead. */
#define PREPARE_BUDGET 64

PyDoc_STRVAR(preparePlain_doc,
"preparePlain(value, types, vocabulary, maxMessageBytes)\n"
"    -> Jellied | Encoded | None\n\n"
"What a broker puts in a message for value: Jellied(value, types) if it\n"
"is plain and small (the message's encoder writes it), else\n"
"encodeIfPlain(value, types, vocabulary, maxMessageBytes): an Encoded if\n"
"it is plain, None if not.");

static PyObject *
speedups_preparePlain(PyObject *Py_UNUSED(module), PyObject *const *args,
                      Py_ssize_t nargs)
{
    PyObject *value, *types;
    if (aheadArguments("preparePlain", args, nargs, &value, &types) < 0) {
        return NULL;
    }
    int rc = checkValue(value, types, PREPARE_BUDGET);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0) {
        Py_RETURN_NONE;
    }
    if (rc == 2) {
        return encodeAhead(value, types, args[2], args[3]);
    }
    Jellied *jellied = PyObject_GC_New(Jellied, &JelliedType);
    if (jellied == NULL) {
        return NULL;
    }
    Py_INCREF(value);
    jellied->value = value;
    Py_XINCREF(types);
    jellied->types = types;
    PyObject_GC_Track(jellied);
    return (PyObject *)jellied;
}

/* ------------------------------------------------------------------ */
/* unjellyPlain                                                        */
/* ------------------------------------------------------------------ */


/* The references of one expression unjellyPlain walks, as
 * pbext._jelly._PlainReferences keeps them: each dictionary is made when
 * the first reference is met (most messages have none). */
typedef struct {
    PyObject *done;    /* ID -> the value of a finished reference */
    PyObject *open;    /* ID -> [container, key, ...]: the slots waiting
                        * for the value of a reference being built */
    PyObject *patched; /* the containers a cycle was closed in */
} PlainRefs;

static PyObject *unjellyNode(PyObject *sexp, PyObject *types, PlainRefs *refs);

/* An item: lists are unjellied, anything else is itself. */
static inline PyObject *
unjellyMember(PyObject *item, PyObject *types, PlainRefs *refs)
{
    if (Py_TYPE(item) == &PyList_Type) {
        return unjellyNode(item, types, refs);
    }
    Py_INCREF(item);
    return item;
}

/* If element is [b"dereference", ID] of a reference still being built (a
 * cycle), the list of its waiting slots (borrowed); else NULL, with an
 * error set or not. */
static PyObject *
openSlots(PlainRefs *refs, PyObject *element)
{
    if (refs == NULL || refs->open == NULL ||
        PyDict_GET_SIZE(refs->open) == 0 ||
        Py_TYPE(element) != &PyList_Type || PyList_GET_SIZE(element) != 2 ||
        !isWord(PyList_GET_ITEM(element, 0), s_dereference) ||
        !PyLong_CheckExact(PyList_GET_ITEM(element, 1))) {
        return NULL;
    }
    return PyDict_GetItemWithError(refs->open, PyList_GET_ITEM(element, 1));
}

/* Make slot key of container wait for the value of a reference being
 * built: it holds None until then. */
static int
waitInSlot(PyObject *slots, PyObject *container, PyObject *key)
{
    if (PyList_Append(slots, container) < 0) {
        return -1;
    }
    return PyList_Append(slots, key);
}

/* [b"dereference", ID] of a finished reference: its value; anything else
 * (a forward reference, a cycle where no slot can wait) is NOT_PLAIN_C. */
static PyObject *
unjellyDereference(PyObject *sexp, PlainRefs *refs)
{
    if (PyList_GET_SIZE(sexp) != 2 || refs->done == NULL ||
        !PyLong_CheckExact(PyList_GET_ITEM(sexp, 1))) {
        return NOT_PLAIN_C;
    }
    PyObject *value = PyDict_GetItemWithError(refs->done,
                                              PyList_GET_ITEM(sexp, 1));
    if (value == NULL) {
        return PyErr_Occurred() ? NULL : NOT_PLAIN_C;
    }
    Py_INCREF(value);
    return value;
}

/* Set the waiting slots of a reference just finished to its value. */
static int
fillSlots(PlainRefs *refs, PyObject *slots, PyObject *value)
{
    for (Py_ssize_t i = 0; i + 1 < PyList_GET_SIZE(slots); i += 2) {
        PyObject *container = PyList_GET_ITEM(slots, i);
        PyObject *key = PyList_GET_ITEM(slots, i + 1);
        if (PyList_CheckExact(container)) {
            Py_ssize_t index = PyLong_AsSsize_t(key);
            if (index == -1 && PyErr_Occurred()) {
                return -1;
            }
            Py_INCREF(value);
            if (PyList_SetItem(container, index, value) < 0) {
                return -1;
            }
        }
        else if (PyDict_SetItem(container, key, value) < 0) {
            return -1;
        }
        if (PyList_Append(refs->patched, container) < 0) {
            return -1;
        }
    }
    return 0;
}

/* [b"reference", ID, expression]: its value, remembered for the
 * dereferences to come and set in the slots that waited for it. */
static PyObject *
unjellyReference(PyObject *sexp, PyObject *types, PlainRefs *refs)
{
    if (PyList_GET_SIZE(sexp) != 3 ||
        !PyLong_CheckExact(PyList_GET_ITEM(sexp, 1))) {
        return NOT_PLAIN_C;
    }
    if (refs->done == NULL) {
        refs->done = PyDict_New();
        refs->open = PyDict_New();
        refs->patched = PyList_New(0);
        if (refs->done == NULL || refs->open == NULL ||
            refs->patched == NULL) {
            return NULL;
        }
    }
    PyObject *refid = PyList_GET_ITEM(sexp, 1);
    PyObject *expression = PyList_GET_ITEM(sexp, 2);
    int known = PyDict_Contains(refs->done, refid);
    if (known == 0) {
        known = PyDict_Contains(refs->open, refid);
    }
    if (known != 0) {
        return known < 0 ? NULL : NOT_PLAIN_C;
    }
    PyObject *slots = PyList_New(0);
    if (slots == NULL) {
        return NULL;
    }
    Py_INCREF(refid);
    Py_INCREF(expression);
    PyObject *value = NULL;
    if (PyDict_SetItem(refs->open, refid, slots) == 0) {
        value = unjellyMember(expression, types, refs);
        if (PyDict_DelItem(refs->open, refid) < 0) {
            if (value != NOT_PLAIN_C) {
                Py_XDECREF(value);
            }
            value = NULL;
        }
    }
    if (value != NULL && value != NOT_PLAIN_C &&
        (fillSlots(refs, slots, value) < 0 ||
         PyDict_SetItem(refs->done, refid, value) < 0)) {
        Py_CLEAR(value);
    }
    Py_DECREF(expression);
    Py_DECREF(refid);
    Py_DECREF(slots);
    return value;
}

/* Empty the containers a cycle was closed in, for an expression the plain
 * path gave up on: nobody else has seen them, and without their cycles
 * reference counting frees them at once, not the garbage collector later
 * (pbext._jelly._PlainReferences.breakCycles). */
static void
dropRefs(PlainRefs *refs, int breakCycles)
{
    if (breakCycles && refs->patched != NULL) {
        PyObject *type, *error, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs->patched); i++) {
            PyObject *container = PyList_GET_ITEM(refs->patched, i);
            if (PyList_CheckExact(container)) {
                PyList_SetSlice(container, 0, PyList_GET_SIZE(container), NULL);
            }
            else {
                PyDict_Clear(container);
            }
        }
        PyErr_Clear();
        PyErr_Restore(type, error, traceback);
    }
    Py_CLEAR(refs->done);
    Py_CLEAR(refs->open);
    Py_CLEAR(refs->patched);
}

/* Whether an exception that a checker or constructor raised is one the
 * plain path leaves to the full unjellier (which raises it again, or
 * reports the refusal): then it is cleared. */
static int
stepAside(void)
{
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* Whether value passes a field's check (1), fails it (0), or -1. */
static int
checkField(PyObject *field, PyObject *value)
{
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 0));
    switch (kind) {
    case CHECK_ANY:
        return 1;
    case CHECK_INT:
        return PyLong_Check(value) && !PyBool_Check(value);
    case CHECK_STR:
        return PyUnicode_Check(value);
    case CHECK_FLOAT:
        return (PyLong_Check(value) || PyFloat_Check(value)) &&
               !PyBool_Check(value);
    case CHECK_BYTES:
        return PyBytes_Check(value);
    case CHECK_BOOL:
        return value == Py_True || value == Py_False;
    default:
        break;
    }
    PyObject *mismatch = PyObject_CallOneArg(PyTuple_GET_ITEM(field, 1), value);
    if (mismatch == NULL) {
        return stepAside() ? 0 : -1;
    }
    Py_DECREF(mismatch);
    return mismatch == Py_None;
}

/* What a dataclass's generated __init__ does when given every field (see
 * pbext.copyable._setsFieldsOnly): a blank instance from object.__new__,
 * each field set with object.__setattr__, in order. */
static PyObject *
buildDirectly(PyTypeObject *cls, PyObject *names, PyObject **values,
              Py_ssize_t n)
{
    PyObject *noArguments = PyTuple_New(0);
    if (noArguments == NULL) {
        return NULL;
    }
    PyObject *obj = PyBaseObject_Type.tp_new(cls, noArguments, NULL);
    Py_DECREF(noArguments);
    if (obj == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GenericSetAttr(obj, PyTuple_GET_ITEM(names, i),
                                    values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    return obj;
}

/*
 * Build a registered type from its unjellied state (a dict, not changed)
 * as pbext._jelly._buildTyped does: a new reference, NOT_PLAIN_C where
 * the registry would do more or refuse, or NULL on error.  If directOnly,
 * also NOT_PLAIN_C unless the object can be built without running any
 * code of its class (a direct spec given every field), as the decoder
 * needs.
 */
static PyObject *
buildTyped(PyObject *spec, PyObject *state, int directOnly)
{
    if (PyTuple_CheckExact(spec) && PyTuple_GET_SIZE(spec) == 6) {
        /* A classic copy: built without running the class's code. */
        return buildClassic(spec, state, NULL);
    }
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 7 ||
        !PyDict_CheckExact(PyTuple_GET_ITEM(spec, 2)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 3)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(spec, 4))) {
        PyErr_SetString(PyExc_TypeError, "malformed receive spec");
        return NULL;
    }
    PyObject *build = PyTuple_GET_ITEM(spec, 0);
    int byKeyword = PyObject_IsTrue(PyTuple_GET_ITEM(spec, 1));
    PyObject *fields = PyTuple_GET_ITEM(spec, 2);
    Py_ssize_t required = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 3));
    PyObject *version = PyTuple_GET_ITEM(spec, 4);
    if (byKeyword < 0 || (required == -1 && PyErr_Occurred())) {
        return NULL;
    }
    PyObject *sent = PyDict_GetItemWithError(state, VersionKey);
    if (sent == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (versioned(version)) {
            return NOT_PLAIN_C;
        }
    }
    else {
        if (!PyLong_CheckExact(sent)) {
            return NOT_PLAIN_C;
        }
        int same = PyObject_RichCompareBool(sent, version, Py_EQ);
        if (same <= 0) {
            return same < 0 ? NULL : NOT_PLAIN_C;
        }
    }
    Py_ssize_t pos = 0, present = 0;
    PyObject *name, *value;
    while (PyDict_Next(state, &pos, &name, &value)) {
        if (name == VersionKey ||
            (sent != NULL && PyUnicode_CheckExact(name) &&
             PyUnicode_Compare(name, VersionKey) == 0)) {
            continue;
        }
        if (!PyUnicode_CheckExact(name)) {
            return NOT_PLAIN_C;
        }
        PyObject *field = PyDict_GetItemWithError(fields, name);
        if (field == NULL) {
            return PyErr_Occurred() ? NULL : NOT_PLAIN_C;
        }
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 3) {
            PyErr_SetString(PyExc_TypeError, "malformed receive spec");
            return NULL;
        }
        Py_INCREF(name);
        Py_INCREF(value);
        int ok = checkField(field, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (ok <= 0) {
            return ok < 0 ? NULL : NOT_PLAIN_C;
        }
        if (PyTuple_GET_ITEM(field, 2) == Py_True) {
            present++;
        }
    }
    if (present != required) {
        return NOT_PLAIN_C;
    }
    PyObject *kwargs = state;
    Py_INCREF(kwargs);
    if (sent != NULL) {
        Py_SETREF(kwargs, PyDict_Copy(state));
        if (kwargs == NULL || PyDict_DelItem(kwargs, VersionKey) < 0) {
            Py_XDECREF(kwargs);
            return NULL;
        }
    }
    PyObject *result;
    PyObject *positional = PyTuple_GET_ITEM(spec, 5);
    if (byKeyword && PyTuple_CheckExact(positional) &&
        PyTuple_GET_SIZE(positional) == PyDict_GET_SIZE(kwargs) &&
        PyTuple_GET_SIZE(positional) <= MAX_POSITIONAL) {
        /* Every parameter, by position: the same call, faster. */
        PyObject *arguments[MAX_POSITIONAL];
        Py_ssize_t n = PyTuple_GET_SIZE(positional);
        for (Py_ssize_t i = 0; i < n; i++) {
            arguments[i] = PyDict_GetItemWithError(
                kwargs, PyTuple_GET_ITEM(positional, i));
            if (arguments[i] == NULL) {
                if (PyErr_Occurred()) {
                    Py_DECREF(kwargs);
                    return NULL;
                }
                n = -1;
                break;
            }
        }
        if (n >= 0) {
            /* The dictionary holds the arguments meanwhile. */
            if (PyTuple_GET_ITEM(spec, 6) == Py_True && PyType_Check(build)) {
                result = buildDirectly((PyTypeObject *)build, positional,
                                       arguments, n);
            }
            else if (directOnly) {
                Py_DECREF(kwargs);
                return NOT_PLAIN_C;
            }
            else {
                result = PyObject_Vectorcall(build, arguments, (size_t)n, NULL);
            }
            Py_DECREF(kwargs);
            if (result == NULL) {
                return stepAside() ? NOT_PLAIN_C : NULL;
            }
            return result;
        }
    }
    if (directOnly) {
        Py_DECREF(kwargs);
        return NOT_PLAIN_C;
    }
    if (byKeyword) {
        PyObject *noArguments = PyTuple_New(0);
        result = noArguments == NULL ? NULL
                                     : PyObject_Call(build, noArguments, kwargs);
        Py_XDECREF(noArguments);
    }
    else {
        result = PyObject_CallOneArg(build, kwargs);
    }
    Py_DECREF(kwargs);
    if (result == NULL) {
        return stepAside() ? NOT_PLAIN_C : NULL;
    }
    return result;
}

/* A [wireName, state] expression of a type in types, or NOT_PLAIN_C. */
static PyObject *
unjellyTyped(PyObject *sexp, PyObject *types)
{
    PyObject *tag = PyList_GET_ITEM(sexp, 0);
    if (types == NULL || !PyBytes_CheckExact(tag)) {
        return NOT_PLAIN_C;
    }
    PyObject *spec = PyDict_GetItemWithError(types, tag);
    if (spec == NULL) {
        return PyErr_Occurred() ? NULL : NOT_PLAIN_C;
    }
    if (PyList_GET_SIZE(sexp) != 2 ||
        Py_TYPE(PyList_GET_ITEM(sexp, 1)) != &PyList_Type) {
        return NOT_PLAIN_C;
    }
    Py_INCREF(spec);
    PyObject *state = unjellyNode(PyList_GET_ITEM(sexp, 1), types, NULL);
    PyObject *result = state;
    if (state != NULL && state != NOT_PLAIN_C) {
        result = PyDict_CheckExact(state) ? buildTyped(spec, state, 0)
                                          : NOT_PLAIN_C;
        Py_DECREF(state);
    }
    Py_DECREF(spec);
    return result;
}

static PyObject *
unjellyNode(PyObject *sexp, PyObject *types, PlainRefs *refs)
{
    Py_ssize_t size = PyList_GET_SIZE(sexp);
    if (size == 0) {
        return NOT_PLAIN_C;
    }
    PyObject *tag = PyList_GET_ITEM(sexp, 0);
    if (isWord(tag, s_unicode)) {
        if (size != 2 || Py_TYPE(PyList_GET_ITEM(sexp, 1)) != &PyBytes_Type) {
            return NOT_PLAIN_C;
        }
        PyObject *raw = PyList_GET_ITEM(sexp, 1);
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw),
                                              PyBytes_GET_SIZE(raw), NULL);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return NOT_PLAIN_C;
        }
        return text;
    }
    if (enterNested(" while unjellying")) {
        return NULL;
    }
    PyObject *result = NULL;
    if (isWord(tag, s_dictionary)) {
        result = PyDict_New();
        if (result == NULL) {
            goto out;
        }
        /* The list may be mutated by hashing keys' Python code: index
         * it afresh each time. */
        for (Py_ssize_t i = 1; i < PyList_GET_SIZE(sexp); i++) {
            PyObject *entry = PyList_GET_ITEM(sexp, i);
            if (Py_TYPE(entry) != &PyList_Type || PyList_GET_SIZE(entry) != 2) {
                Py_CLEAR(result);
                result = NOT_PLAIN_C;
                goto out;
            }
            Py_INCREF(entry);
            PyObject *key = unjellyMember(PyList_GET_ITEM(entry, 0), types,
                                          refs);
            PyObject *slots = NULL;
            PyObject *value = NULL;
            if (key != NULL && key != NOT_PLAIN_C) {
                /* A cycle: the value waits for the reference. */
                slots = openSlots(refs, PyList_GET_ITEM(entry, 1));
                if (slots != NULL) {
                    Py_INCREF(Py_None);
                    value = Py_None;
                }
                else if (!PyErr_Occurred()) {
                    value = unjellyMember(PyList_GET_ITEM(entry, 1), types,
                                          refs);
                }
            }
            Py_DECREF(entry);
            if (key == NULL || key == NOT_PLAIN_C || value == NULL ||
                value == NOT_PLAIN_C) {
                Py_CLEAR(result);
                result = pairFailed(key, value);
                goto out;
            }
            int rc = PyDict_SetItem(result, key, value);
            if (rc == 0 && slots != NULL) {
                rc = waitInSlot(slots, result, key);
            }
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                Py_CLEAR(result);
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    result = NOT_PLAIN_C;
                }
                goto out;
            }
        }
        goto out;
    }
    int isList = isWord(tag, s_list);
    int isTuple = !isList && isWord(tag, s_tuple);
    int isSet = !isList && !isTuple && isWord(tag, s_set);
    int isFrozenSet = !isList && !isTuple && !isSet &&
                      isWord(tag, s_frozenset);
    if (isList || isTuple || isSet || isFrozenSet) {
        PyObject *items = PyList_New(0);
        if (items == NULL) {
            goto out;
        }
        for (Py_ssize_t i = 1; i < PyList_GET_SIZE(sexp); i++) {
            PyObject *element = PyList_GET_ITEM(sexp, i);
            PyObject *slots = openSlots(refs, element);
            PyObject *value;
            if (slots != NULL) {
                /* A cycle: only a list's item may wait for its value. */
                if (!isList) {
                    Py_DECREF(items);
                    result = NOT_PLAIN_C;
                    goto out;
                }
                PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(items));
                int rc = index == NULL ? -1 : waitInSlot(slots, items, index);
                Py_XDECREF(index);
                if (rc < 0) {
                    Py_DECREF(items);
                    goto out;
                }
                Py_INCREF(Py_None);
                value = Py_None;
            }
            else if (PyErr_Occurred()) {
                Py_DECREF(items);
                goto out;
            }
            else {
                Py_INCREF(element);
                value = unjellyMember(element, types, refs);
                Py_DECREF(element);
            }
            if (value == NULL || value == NOT_PLAIN_C) {
                Py_DECREF(items);
                result = value;
                goto out;
            }
            int rc = PyList_Append(items, value);
            Py_DECREF(value);
            if (rc < 0) {
                Py_DECREF(items);
                goto out;
            }
        }
        if (isList) {
            result = items;
            goto out;
        }
        if (isTuple) {
            result = PyList_AsTuple(items);
        }
        else {
            result = isSet ? PySet_New(items) : PyFrozenSet_New(items);
            if (result == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                result = NOT_PLAIN_C;
            }
        }
        Py_DECREF(items);
        goto out;
    }
    if (isWord(tag, s_None)) {
        if (size == 1) {
            Py_INCREF(Py_None);
            result = Py_None;
        }
        else {
            result = NOT_PLAIN_C;
        }
        goto out;
    }
    result = NOT_PLAIN_C;
    if (isWord(tag, s_boolean) && size == 2) {
        PyObject *word = PyList_GET_ITEM(sexp, 1);
        if (isWord(word, s_true)) {
            Py_INCREF(Py_True);
            result = Py_True;
        }
        else if (isWord(word, s_false)) {
            Py_INCREF(Py_False);
            result = Py_False;
        }
    }
    if (result == NOT_PLAIN_C && refs != NULL) {
        if (isWord(tag, s_reference)) {
            result = unjellyReference(sexp, types, refs);
            goto out;
        }
        if (isWord(tag, s_dereference)) {
            result = unjellyDereference(sexp, refs);
            goto out;
        }
    }
    if (result == NOT_PLAIN_C) {
        result = unjellyTyped(sexp, types);
    }
out:
    leaveNested();
    return result;
}


/* The value of a complete plain-jelly list whose list elements are
 * already values (decoding in plain-jelly mode), as _unjellyPlainPython
 * would make it; NOT_PLAIN_C if it is not plain. */
static PyObject *
convertNode(PyObject *list)
{
    Py_ssize_t size = PyList_GET_SIZE(list);
    PyObject *tag = PyList_GET_ITEM(list, 0);
    if (isWord(tag, s_unicode)) {
        PyObject *raw = size == 2 ? PyList_GET_ITEM(list, 1) : NULL;
        if (raw == NULL || Py_TYPE(raw) != &PyBytes_Type) {
            return NOT_PLAIN_C;
        }
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw),
                                              PyBytes_GET_SIZE(raw), NULL);
        if (text == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return NOT_PLAIN_C;
        }
        return text;
    }
    if (isWord(tag, s_dictionary)) {
#if PY_VERSION_HEX < 0x030E0000
        PyObject *result = _PyDict_NewPresized(size - 1);
#else
        PyObject *result = PyDict_New();
#endif
        if (result == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 1; i < size; i++) {
            PyObject *entry = PyList_GET_ITEM(list, i);
            if (Py_TYPE(entry) != &PyList_Type || PyList_GET_SIZE(entry) != 2) {
                Py_DECREF(result);
                return NOT_PLAIN_C;
            }
            if (PyDict_SetItem(result, PyList_GET_ITEM(entry, 0),
                               PyList_GET_ITEM(entry, 1)) < 0) {
                Py_DECREF(result);
                if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                    PyErr_Clear();
                    return NOT_PLAIN_C;
                }
                return NULL;
            }
        }
        return result;
    }
    if (isWord(tag, s_list) || isWord(tag, s_tuple)) {
        int isList = isWord(tag, s_list);
        PyObject *result = isList ? PyList_New(size - 1)
                                  : PyTuple_New(size - 1);
        if (result == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 1; i < size; i++) {
            PyObject *element = PyList_GET_ITEM(list, i);
            Py_INCREF(element);
            if (isList) {
                PyList_SET_ITEM(result, i - 1, element);
            }
            else {
                PyTuple_SET_ITEM(result, i - 1, element);
            }
        }
        return result;
    }
    if (isWord(tag, s_set) || isWord(tag, s_frozenset)) {
        PyObject *items = PyList_GetSlice(list, 1, size);
        if (items == NULL) {
            return NULL;
        }
        PyObject *result = isWord(tag, s_set) ? PySet_New(items)
                                              : PyFrozenSet_New(items);
        Py_DECREF(items);
        if (result == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            return NOT_PLAIN_C;
        }
        return result;
    }
    if (isWord(tag, s_None)) {
        if (size != 1) {
            return NOT_PLAIN_C;
        }
        Py_RETURN_NONE;
    }
    if (isWord(tag, s_boolean) && size == 2) {
        PyObject *word = PyList_GET_ITEM(list, 1);
        if (isWord(word, s_true)) {
            Py_RETURN_TRUE;
        }
        if (isWord(word, s_false)) {
            Py_RETURN_FALSE;
        }
    }
    return NOT_PLAIN_C;
}

/*
 * The plain jelly of a value the decoder made (a new reference), in which
 * the objects it built for registered types stay as they are, as
 * [PREBUILT, object] (pbext._jelly.Unjellier returns the object).
 *
 * The decoder's values are trees it has just built from the bytes, so
 * this walk keeps no identity set: the same object met twice is one of
 * the interpreter's shared constants (the empty tuple, an empty
 * frozenset, a small int, an interned str), which the full unjellier
 * makes equal values of, and which an identity check would wrongly call
 * shared.  It runs no Python code (the containers are exact builtins the
 * decoder owns, the keys exact strs, bytes, numbers or such containers).
 */
static PyObject *
jellyBack(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyBytes_Type || kind == &PyLong_Type ||
        kind == &PyFloat_Type) {
        Py_INCREF(value);
        return value;
    }
    if (kind == &PyUnicode_Type) {
        return pair(s_unicode, PyUnicode_AsUTF8String(value));
    }
    if (value == Py_None) {
        PyObject *list = PyList_New(1);
        if (list != NULL) {
            Py_INCREF(s_None);
            PyList_SET_ITEM(list, 0, s_None);
        }
        return list;
    }
    if (kind == &PyBool_Type) {
        PyObject *word = value == Py_True ? s_true : s_false;
        Py_INCREF(word);
        return pair(s_boolean, word);
    }
    PyObject *tag;
    if (kind == &PyDict_Type) {
        tag = s_dictionary;
    }
    else if (kind == &PyList_Type) {
        tag = s_list;
    }
    else if (kind == &PyTuple_Type) {
        tag = s_tuple;
    }
    else if (kind == &PySet_Type) {
        tag = s_set;
    }
    else if (kind == &PyFrozenSet_Type) {
        tag = s_frozenset;
    }
    else {
        /* An object built for a registered type. */
        Py_INCREF(value);
        return pair(Prebuilt, value);
    }
    if (Py_EnterRecursiveCall(" while jellying a decoded value back")) {
        return NULL;
    }
    PyObject *sexp = PyList_New(1);
    if (sexp == NULL) {
        goto out;
    }
    Py_INCREF(tag);
    PyList_SET_ITEM(sexp, 0, tag);
    if (kind == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            PyObject *k = jellyBack(key);
            PyObject *v = k == NULL ? NULL : jellyBack(item);
            PyObject *entry = v == NULL ? NULL : PyList_New(2);
            if (entry == NULL) {
                Py_XDECREF(k);
                Py_XDECREF(v);
                Py_CLEAR(sexp);
                goto out;
            }
            PyList_SET_ITEM(entry, 0, k);
            PyList_SET_ITEM(entry, 1, v);
            int rc = PyList_Append(sexp, entry);
            Py_DECREF(entry);
            if (rc < 0) {
                Py_CLEAR(sexp);
                goto out;
            }
        }
        goto out;
    }
    PyObject *iterator = PyObject_GetIter(value);
    if (iterator == NULL) {
        Py_CLEAR(sexp);
        goto out;
    }
    PyObject *element;
    while ((element = PyIter_Next(iterator)) != NULL) {
        PyObject *j = jellyBack(element);
        Py_DECREF(element);
        int rc = j == NULL ? -1 : PyList_Append(sexp, j);
        Py_XDECREF(j);
        if (rc < 0) {
            break;
        }
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred()) {
        Py_CLEAR(sexp);
    }
out:
    Py_LeaveRecursiveCall();
    return sexp;
}

PyDoc_STRVAR(unjellyPlain_doc,
"unjellyPlain(sexp, types=None)\n\n"
"The accelerated pbext._jelly.unjellyPlain: the same objects, or\n"
"NOT_PLAIN where the full unjellier is needed.  types holds the\n"
"receive specs of the registered types to build too.");

static PyObject *
speedups_unjellyPlain(PyObject *Py_UNUSED(module), PyObject *const *args,
                      Py_ssize_t nargs)
{
    PyObject *sexp, *types;
    if (checkConfigured() < 0 ||
        valueAndTypes("unjellyPlain", args, nargs, &sexp, &types) < 0) {
        return NULL;
    }
    if (Py_TYPE(sexp) != &PyList_Type) {
        Py_INCREF(sexp);
        return sexp;
    }
    PlainRefs refs = {NULL, NULL, NULL};
    PyObject *result = unjellyNode(sexp, types, &refs);
    dropRefs(&refs, result == NULL || result == NOT_PLAIN_C);
    return answerPlain(result);
}

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

PyDoc_STRVAR(configure_doc,
"configure(**helpers)\n\n"
"Hand the accelerator the Python twin's exception classes and helpers:\n"
"framingError, bananaError, plain, intToken, sizeLimit (pbext.codec),\n"
"notPlain and prebuilt (pbext._jelly) and versionKey (pbext.copyable, by\n"
"way of pbext._jelly).  Called by those modules when they import.");

static PyObject *
speedups_configure(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"framingError", "bananaError", "plain",
                               "intToken", "sizeLimit", "notPlain",
                               "prebuilt", "versionKey", NULL};
    PyObject *framing = NULL, *banana = NULL, *plain = NULL, *intToken = NULL,
             *limit = NULL, *notPlain = NULL, *prebuilt = NULL,
             *versionKey = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOU:configure",
                                     keywords, &framing, &banana, &plain,
                                     &intToken, &limit, &notPlain, &prebuilt,
                                     &versionKey)) {
        return NULL;
    }
    if (limit != NULL) {
        Py_ssize_t n = PyLong_AsSsize_t(limit);
        if (n == -1 && PyErr_Occurred()) {
            return NULL;
        }
        sizeLimit = n;
    }
#define SET(target, value) \
    if (value != NULL) { Py_INCREF(value); Py_XSETREF(target, value); }
    SET(FramingError, framing);
    SET(BananaError, banana);
    SET(plainFunc, plain);
    SET(intTokenFunc, intToken);
    SET(NotPlain, notPlain);
    SET(Prebuilt, prebuilt);
    SET(VersionKey, versionKey);
#undef SET
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */
/* Incoming calls: the answer of a plain call (pbext._plaincalls)      */
/* ------------------------------------------------------------------ */

/* The message (command, requestID, Jellied(value)) as encodePieces
 * makes it, when it is one piece and value is a small value of builtins
 * only; else None.  A new reference, never NULL: an error met on the way
 * is cleared (nothing of the value's own runs here, so the caller's
 * general path meets it again, where it reports it). */
static PyObject *
plainAnswer(PyObject *command, PyObject *requestID, PyObject *value,
            PyObject *vocabulary, PyObject *limit)
{
    int rc = checkValue(value, NULL, PREPARE_BUDGET);
    if (rc != 1) {
        /* Not plain, not small, or an error: the general path's. */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Jellied *jellied = PyObject_GC_New(Jellied, &JelliedType);
    if (jellied == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_INCREF(value);
    jellied->value = value;
    jellied->types = NULL;
    PyObject_GC_Track(jellied);
    PyObject *message = PyTuple_Pack(3, command, requestID, (PyObject *)jellied);
    Py_DECREF(jellied);
    PyObject *pieces = NULL;
    if (message != NULL) {
        Encoder e;
        if (encoderStart(&e, vocabulary, limit, 1) == 0) {
            pieces = encoderFinish(&e, encodeItem(&e, message));
        }
        Py_DECREF(message);
    }
    if (pieces == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *result = Py_None;
    if (PyList_GET_SIZE(pieces) == 1) {
        result = PyList_GET_ITEM(pieces, 0);
    }
    Py_INCREF(result);
    Py_DECREF(pieces);
    return result;
}

PyDoc_STRVAR(answerBytes_doc,
"answerBytes(command, requestID, value, vocabulary, maxMessageBytes)\n"
"    -> bytes | None\n\n"
"The message encodePieces((command, requestID, Jellied(value)),\n"
"vocabulary, maxMessageBytes) makes, as one byte string, when value is\n"
"made of builtins only and is small (preparePlain(value, None, ...)\n"
"would give a Jellied) and the message is one piece; else None.  An\n"
"error met on the way is cleared, and None answered: nothing of the\n"
"value's own runs here, so the caller's general path meets it again,\n"
"where it reports it.");

static PyObject *
speedups_answerBytes(PyObject *Py_UNUSED(module), PyObject *const *args,
                     Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError,
                     "answerBytes() takes 5 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    return plainAnswer(args[0], args[1], args[2], args[3], args[4]);
}

/* The name of pbext.typecheck.typed's marker. */
static PyObject *s__pbextTyped = NULL;

/* What a marker read as getattr reads it says: 1 for True, 0 for False
 * or none, -1 for anything else (its truth is the general path's to
 * ask). */
static int
markerKind(PyObject *marker)
{
    return marker == NULL || marker == Py_False ? 0 : marker == Py_True ? 1 : -1;
}

/* pbext.typecheck.isTyped(method) for a bound method of a plain function
 * whose object's class is an instance of type itself: 1 or 0, read as
 * getattr reads the markers but without running anything or raising (no
 * AttributeError is made for a marker that is not there); -1 for any
 * other method, or a marker that is not a bool (the caller's general
 * path asks isTyped), with no error set. */
static int
plainTyped(PyObject *method)
{
    if (!PyMethod_Check(method)) {
        return -1;
    }
    PyObject *function = PyMethod_GET_FUNCTION(method);
    PyObject *owner = PyMethod_GET_SELF(method);
    if (!PyFunction_Check(function) || !Py_IS_TYPE(Py_TYPE(owner), &PyType_Type) ||
        _PyType_Lookup(&PyMethod_Type, s__pbextTyped) != NULL ||
        _PyType_Lookup(&PyFunction_Type, s__pbextTyped) != NULL ||
        _PyType_Lookup(&PyType_Type, s__pbextTyped) != NULL) {
        return -1;
    }
    /* The function's own marker, in its __dict__ (pbext.typed's). */
    PyObject *marker = NULL;
    PyObject *attributes = ((PyFunctionObject *)function)->func_dict;
    if (attributes != NULL) {
        marker = PyDict_GetItemWithError(attributes, s__pbextTyped);
        if (marker == NULL && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
    }
    int kind = markerKind(marker);
    if (kind != 0) {
        return kind;
    }
    /* Its class's, found as type's getattr finds it. */
    return markerKind(_PyType_Lookup(Py_TYPE(owner), s__pbextTyped));
}

/* Whether value's type is one whose values are never awaitable
 * (pbext._dispatch._NEVER_AWAITABLE). */
static int
neverAwaitable(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    return kind == &PyLong_Type || kind == &PyFloat_Type ||
           kind == &PyUnicode_Type || kind == &PyBytes_Type ||
           kind == &PyBool_Type || value == Py_None || kind == &PyList_Type ||
           kind == &PyTuple_Type || kind == &PyDict_Type ||
           kind == &PySet_Type || kind == &PyFrozenSet_Type;
}

PyDoc_STRVAR(callPlain_doc,
"callPlain(target, attribute, netArgs, netKw, command, requestID,\n"
"          vocabulary, maxMessageBytes) -> tuple | None\n\n"
"Run a plain call admitted to target (pbext._plaincalls): its method,\n"
"getattr(target, attribute, None), is called with the arguments of the\n"
"Jellied netArgs when netKw's are an empty dict and the method is not\n"
"typed, and its result encoded in the message answerBytes(command,\n"
"requestID, result, vocabulary, maxMessageBytes) makes.  An error of\n"
"getattr or of the method is raised.  The answer says how far it went:\n"
"None (no such method), (method,) (not called), (method, result) (not\n"
"encoded) or (method, result, message).");

static PyObject *
speedups_callPlain(PyObject *Py_UNUSED(module), PyObject *const *args,
                   Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError,
                     "callPlain() takes 8 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    PyObject *netArgs = args[2], *netKw = args[3];
    if (!Py_IS_TYPE(netArgs, &JelliedType) || !Py_IS_TYPE(netKw, &JelliedType)) {
        PyErr_SetString(PyExc_TypeError, "callPlain() takes Jellied arguments");
        return NULL;
    }
    if (s__pbextTyped == NULL) {
        s__pbextTyped = PyUnicode_InternFromString("_pbextTyped");
        if (s__pbextTyped == NULL) {
            return NULL;
        }
    }
    PyObject *method = PyObject_GetAttr(args[0], args[1]);
    if (method == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (method == Py_None) {
        return method;
    }
    PyObject *positional = ((Jellied *)netArgs)->value;
    PyObject *keywords = ((Jellied *)netKw)->value;
    if (!PyDict_CheckExact(keywords) || PyDict_GET_SIZE(keywords) != 0 ||
        !(PyList_CheckExact(positional) || PyTuple_CheckExact(positional)) ||
        plainTyped(method) != 0) {
        return Py_BuildValue("(N)", method);
    }
    /* Held while called. */
    Py_INCREF(positional);
    PyObject *result = PyObject_Vectorcall(
        method, PySequence_Fast_ITEMS(positional),
        (size_t)PySequence_Fast_GET_SIZE(positional), NULL);
    Py_DECREF(positional);
    if (result == NULL) {
        Py_DECREF(method);
        return NULL;
    }
    if (!neverAwaitable(result)) {
        return Py_BuildValue("(NN)", method, result);
    }
    PyObject *message = plainAnswer(args[4], args[5], result, args[6], args[7]);
    if (message == Py_None) {
        Py_DECREF(message);
        return Py_BuildValue("(NN)", method, result);
    }
    return Py_BuildValue("(NNN)", method, result, message);
}

static PyMethodDef speedups_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))speedups_encode,
     METH_VARARGS | METH_KEYWORDS, encode_doc},
    {"encodePieces", (PyCFunction)(void (*)(void))speedups_encodePieces,
     METH_VARARGS | METH_KEYWORDS, encodePieces_doc},
    {"jellyPlain", (PyCFunction)(void (*)(void))speedups_jellyPlain,
     METH_FASTCALL, jellyPlain_doc},
    {"unjellyPlain", (PyCFunction)(void (*)(void))speedups_unjellyPlain,
     METH_FASTCALL, unjellyPlain_doc},
    {"isPlain", (PyCFunction)(void (*)(void))speedups_isPlain, METH_FASTCALL,
     isPlain_doc},
    {"encodeIfPlain", (PyCFunction)(void (*)(void))speedups_encodeIfPlain,
     METH_FASTCALL, encodeIfPlain_doc},
    {"preparePlain", (PyCFunction)(void (*)(void))speedups_preparePlain,
     METH_FASTCALL, preparePlain_doc},
    {"answerBytes", (PyCFunction)(void (*)(void))speedups_answerBytes,
     METH_FASTCALL, answerBytes_doc},
    {"callPlain", (PyCFunction)(void (*)(void))speedups_callPlain,
     METH_FASTCALL, callPlain_doc},
    {"configure", (PyCFunction)(void (*)(void))speedups_configure,
     METH_VARARGS | METH_KEYWORDS, configure_doc},
    {NULL}
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pbext._speedups",
    .m_doc = "The optional C accelerator of pbext.codec and pbext._jelly.",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    struct { PyObject **target; const char *word; } words[] = {
        {&s_unicode, "unicode"}, {&s_None, "None"},
        {&s_boolean, "boolean"}, {&s_true, "true"}, {&s_false, "false"},
        {&s_dictionary, "dictionary"}, {&s_list, "list"},
        {&s_tuple, "tuple"}, {&s_set, "set"}, {&s_frozenset, "frozenset"},
        {&s_reference, "reference"}, {&s_dereference, "dereference"},
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (*words[i].target == NULL) {
            *words[i].target = PyBytes_FromString(words[i].word);
            if (*words[i].target == NULL) {
                return NULL;
            }
        }
    }
    if (s___dict__ == NULL) {
        s___dict__ = PyUnicode_InternFromString("__dict__");
        s_unjellyableRegistry = PyUnicode_InternFromString("unjellyableRegistry");
        if (s___dict__ == NULL || s_unjellyableRegistry == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&DecoderCoreType) < 0 ||
        PyType_Ready(&ReceiveBufferType) < 0 ||
        PyType_Ready(&JelliedType) < 0 || PyType_Ready(&EncodedType) < 0) {
        return NULL;
    }
    if (NotPlainError == NULL) {
        NotPlainError = PyErr_NewExceptionWithDoc(
            "pbext._speedups.NotPlainError",
            "encode() met a Jellied value that is not plain: jelly it the "
            "ordinary way.", NULL, NULL);
        if (NotPlainError == NULL) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&DecoderCoreType);
    if (PyModule_AddObject(module, "DecoderCore",
                           (PyObject *)&DecoderCoreType) < 0) {
        Py_DECREF(&DecoderCoreType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&JelliedType);
    if (PyModule_AddObject(module, "Jellied", (PyObject *)&JelliedType) < 0) {
        Py_DECREF(&JelliedType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&EncodedType);
    if (PyModule_AddObject(module, "Encoded", (PyObject *)&EncodedType) < 0) {
        Py_DECREF(&EncodedType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(NotPlainError);
    if (PyModule_AddObject(module, "NotPlainError", NotPlainError) < 0) {
        Py_DECREF(NotPlainError);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
