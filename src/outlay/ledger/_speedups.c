/* outlay.ledger._speedups: the SQLite ledger's per-event row building and inserts, compiled.
 *
 * ``event_rows`` does exactly what ``outlay.ledger._sqlite.event_rows_py`` does (that Python
 * function is the reference; tests compare the two on generated batches): one ``ledger_events``
 * row per distinct event id, and the batch's rollup deltas added to a ``RollupDeltas``. It runs
 * once per ingested event, and in Python it was a third of ``SQLiteLedger.write``
 * (docs/benchmarks.md). Everything uncommon is handed back to the Python helpers given to
 * ``configure``: a time that is not in ``datetime.UTC``, a day not seen yet in the batch, the
 * run-path links, an event with no payload. Money stays ``Decimal``, added by the ledger's own
 * context (``MONEY_CONTEXT.add``), formatted by ``format(cost, "f")`` as in Python.
 *
 * ``insert_rows`` is ``executemany`` for those rows and the rollup upserts, stepped on the
 * connection's own SQLite handle (see its section below).
 *
 * CPython's public C API is used, and one field of ``sqlite3.Connection``: its handle. The module
 * is optional (the build skips it when no compiler is found, and the Python code runs instead).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>

static PyObject *h_time_us;   /* time_us(datetime) -> int */
static PyObject *h_day_of;    /* day_of(int) -> str */
static PyObject *h_encode;    /* encode_event(event) -> bytes */
static PyObject *h_link;      /* RollupDeltas.link(deltas, path, root_run_id, us) */
static PyObject *h_add;       /* MONEY_CONTEXT.add */
static PyObject *h_several;   /* SEVERAL_TENANTS */
static PyTypeObject *t_acc;   /* Acc */
static PyTypeObject *t_run;   /* RunAcc */

static PyObject *zero, *one, *empty, *format_f, *s_groups, *s_runs;
static PyTypeObject *t_decimal; /* decimal.Decimal */

#define US_PER_DAY 86400000000LL

/* Direct slot access. The classes handed to ``configure`` are slotted dataclasses; reading or
 * writing a field through its member descriptor's offset skips the generic attribute lookup,
 * which was the biggest single cost here. An object of any other type (a subclass, say) goes
 * through PyObject_GetAttr / PyObject_SetAttr as Python would. */
typedef struct {
    PyTypeObject *type;
    PyObject *name;
    Py_ssize_t offset;
} Field;

enum {
    E_TIME, E_TENANT, E_FEATURE, E_AGENT, E_MODEL, E_PROVIDER, E_OPERATION, E_ENVIRONMENT, E_ORIGIN,
    E_USAGE, E_COST, E_RUN_ID, E_RUN_PATH, E_ROOT, E_PARENT, E_REASON, E_VERSION,
    U_TOK0, U_TOK1, U_TOK2, U_TOK3, U_TOK4,
    A_EVENTS, A_UNPRICED, A_COST, A_TOKENS,
    R_PARENT, R_ROOT, R_TENANT, R_AGENT, R_FIRST, R_LAST, R_ACC,
    N_FIELDS
};
static const char *const field_names[N_FIELDS] = {
    "time", "tenant_id", "feature", "agent", "model", "provider", "operation", "environment", "origin",
    "usage", "cost", "run_id", "run_path", "root_run_id", "parent_run_id", "unpriced_reason",
    "price_version",
    "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "events", "unpriced", "cost", "tokens",
    "parent_run_id", "root_run_id", "tenant_id", "agent", "first_us", "last_us", "acc",
};
static Field fields[N_FIELDS];

/* obj.<field> (new reference). */
static PyObject *
get(PyObject *obj, int which)
{
    const Field *field = &fields[which];
    if (Py_TYPE(obj) != field->type)
        return PyObject_GetAttr(obj, field->name);
    PyObject *value = *(PyObject **)((char *)obj + field->offset);
    if (value == NULL) { /* an empty slot: the member descriptor's error */
        PyErr_Format(PyExc_AttributeError, "'%.200s' object has no attribute '%U'", Py_TYPE(obj)->tp_name,
                     field->name);
        return NULL;
    }
    return Py_NewRef(value);
}

/* obj.<field> = value (mutable classes only: Acc and RunAcc). */
static int
set(PyObject *obj, int which, PyObject *value)
{
    const Field *field = &fields[which];
    if (Py_TYPE(obj) != field->type)
        return PyObject_SetAttr(obj, field->name, value);
    PyObject **slot = (PyObject **)((char *)obj + field->offset);
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
    return 0;
}

/* Resolves the fields ``first``..``last`` of ``type`` into ``out``: each must be an object slot. */
static int
resolve(Field *out, PyObject *type, int first, int last)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes classes");
        return -1;
    }
    for (int i = first; i <= last; i++) {
        PyObject *name = PyUnicode_InternFromString(field_names[i]);
        if (name == NULL)
            return -1;
        PyObject *descr = PyObject_GetAttr(type, name);
        if (descr == NULL) {
            Py_DECREF(name);
            return -1;
        }
        /* The descriptor must describe ``type``'s own layout (one of its bases' slots): a
         * member descriptor of another class, put in ``type``'s namespace, holds an offset past
         * the end of ``type``'s objects, which Python itself refuses to apply to them. */
        int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type)
                 && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
                 && PyType_IsSubtype((PyTypeObject *)type, PyDescr_TYPE(descr));
        Py_ssize_t offset = ok ? ((PyMemberDescrObject *)descr)->d_member->offset : 0;
        Py_DECREF(descr);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%U is not an object slot", ((PyTypeObject *)type)->tp_name, name);
            Py_DECREF(name);
            return -1;
        }
        out[i].name = name;
        out[i].type = (PyTypeObject *)Py_NewRef(type);
        out[i].offset = offset;
    }
    return 0;
}

/* Whether ``make`` may create objects of ``type`` with ``tp_alloc`` alone (no ``tp_new``, no
 * ``__init__``): a Python class whose instance layout is ``object``'s plus its slots. A class with
 * another C base (``dict``, say) would get an object its base never initialised. */
static int
allocatable(PyObject *type)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes classes");
        return -1;
    }
    PyTypeObject *cls = (PyTypeObject *)type;
    if (!PyType_HasFeature(cls, Py_TPFLAGS_HEAPTYPE) || cls->tp_base != &PyBaseObject_Type
        || cls->tp_alloc != PyType_GenericAlloc || cls->tp_itemsize != 0
        || PyType_HasFeature(cls, Py_TPFLAGS_IS_ABSTRACT)) {
        PyErr_Format(PyExc_TypeError, "%s must be a Python class deriving from object alone", cls->tp_name);
        return -1;
    }
    return 0;
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d (Howard Hinnant's days_from_civil). */
static long long
days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* Epoch microseconds of ``moment``: computed here for a datetime in UTC, else by time_us(). */
static PyObject *
epoch_us(PyObject *moment, long long *out)
{
    if (PyDateTime_CheckExact(moment) && PyDateTime_DATE_GET_TZINFO(moment) == PyDateTime_TimeZone_UTC) {
        long long days = days_from_civil(
            PyDateTime_GET_YEAR(moment), PyDateTime_GET_MONTH(moment), PyDateTime_GET_DAY(moment));
        long long seconds = ((days * 24 + PyDateTime_DATE_GET_HOUR(moment)) * 60
                             + PyDateTime_DATE_GET_MINUTE(moment)) * 60
                            + PyDateTime_DATE_GET_SECOND(moment);
        *out = seconds * 1000000 + PyDateTime_DATE_GET_MICROSECOND(moment);
        return PyLong_FromLongLong(*out);
    }
    PyObject *us = PyObject_CallOneArg(h_time_us, moment);
    if (us == NULL)
        return NULL;
    *out = PyLong_AsLongLong(us);
    if (*out == -1 && PyErr_Occurred()) {
        Py_DECREF(us);
        return NULL;
    }
    return us;
}

/* ``format(amount, "f")``. For an exact ``Decimal`` this is its ``str`` when that has no exponent,
 * and otherwise that text written out in full (``dec_format`` parses a format spec and goes through
 * the digits' tuple: five times the work, once per event). Tests hold it to ``format``. */
static PyObject *
plain(PyObject *amount)
{
    if (Py_TYPE(amount) != t_decimal)
        return PyObject_Format(amount, format_f);
    PyObject *text = PyObject_Str(amount);
    if (text == NULL)
        return NULL;
    Py_ssize_t size;
    const char *sci = PyUnicode_AsUTF8AndSize(text, &size);
    if (sci == NULL) {
        Py_DECREF(text);
        return NULL;
    }
    const char *e = memchr(sci, 'E', (size_t)size);
    if (e == NULL)
        return text; /* already plain: 0.000001, -0.000, NaN, Infinity */
    /* [-]d[.ddd]E(+|-)n: the coefficient's digits, and the exponent of its last digit */
    int negative = sci[0] == '-';
    const char *at = sci + negative;
    char digits[128];
    Py_ssize_t count = 0, fraction = 0;
    int seen_point = 0;
    for (; at < e; at++) {
        if (*at == '.') {
            seen_point = 1;
            continue;
        }
        if (count == (Py_ssize_t)sizeof digits) {
            Py_DECREF(text);
            return PyObject_Format(amount, format_f); /* longer than any money amount: as Python */
        }
        digits[count++] = *at;
        fraction += seen_point;
    }
    long long exponent = strtoll(e + 1, NULL, 10) - fraction;
    Py_DECREF(text);
    if (exponent > 4096 || exponent < -4096)
        return PyObject_Format(amount, format_f);
    int is_zero = count == 1 && digits[0] == '0';
    Py_ssize_t places = exponent < 0 ? (Py_ssize_t)-exponent : 0;
    Py_ssize_t whole = exponent >= 0 ? (is_zero ? 1 : count + (Py_ssize_t)exponent)
                                     : (count > places ? count - places : 1);
    Py_ssize_t length = negative + whole + (places ? 1 + places : 0);
    PyObject *out = PyUnicode_New(length, 127);
    if (out == NULL)
        return NULL;
    char *w = (char *)PyUnicode_DATA(out);
    if (negative)
        *w++ = '-';
    if (exponent >= 0) {
        if (is_zero) {
            *w++ = '0';
        } else {
            memcpy(w, digits, (size_t)count);
            memset(w + count, '0', (size_t)exponent);
        }
    } else if (count > places) {
        memcpy(w, digits, (size_t)(count - places));
        w += count - places;
        *w++ = '.';
        memcpy(w, digits + count - places, (size_t)places);
    } else {
        *w++ = '0';
        *w++ = '.';
        memset(w, '0', (size_t)(places - count));
        memcpy(w + places - count, digits, (size_t)count);
    }
    return out;
}

/* ``value or ""`` for an optional str (steals ``value``, returns a new reference). */
static PyObject *
or_empty(PyObject *value)
{
    if (value != NULL && (value == Py_None || (PyUnicode_Check(value) && PyUnicode_GET_LENGTH(value) == 0))) {
        Py_DECREF(value);
        return Py_NewRef(empty);
    }
    return value;
}

/* obj.<field> += delta (Python ints). */
static int
add_to(PyObject *obj, int which, PyObject *delta)
{
    PyObject *value = get(obj, which);
    if (value == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(value, delta);
    Py_DECREF(value);
    if (sum == NULL)
        return -1;
    int rc = set(obj, which, sum);
    Py_DECREF(sum);
    return rc;
}

/* One more event in ``acc`` (an Acc): events, and unpriced or cost (``add`` when both known). */
static int
acc_add(PyObject *acc, PyObject *cost)
{
    if (add_to(acc, A_EVENTS, one) < 0)
        return -1;
    if (cost == Py_None)
        return add_to(acc, A_UNPRICED, one);
    PyObject *current = get(acc, A_COST);
    if (current == NULL)
        return -1;
    PyObject *total = current == Py_None ? Py_NewRef(cost) : PyObject_CallFunctionObjArgs(h_add, current, cost, NULL);
    Py_DECREF(current);
    if (total == NULL)
        return -1;
    int rc = set(acc, A_COST, total);
    Py_DECREF(total);
    return rc;
}

/* A new instance of the slotted class ``type`` with ``values`` in its fields ``first``.. (in
 * order): what its dataclass __init__ does (neither class has defaults left or a __post_init__). */
static PyObject *
make(PyTypeObject *type, int first, int count, PyObject *const *values)
{
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        if (set(obj, first + i, values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    return obj;
}

/* Acc(1, unpriced, cost, list(tokens)) */
static PyObject *
new_acc(PyObject *cost, PyObject *const *tokens)
{
    PyObject *list = PyList_New(5);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < 5; i++)
        PyList_SET_ITEM(list, i, Py_NewRef(tokens[i]));
    PyObject *values[4] = {one, cost == Py_None ? one : zero, cost, list};
    PyObject *acc = make(t_acc, A_EVENTS, 4, values);
    Py_DECREF(list);
    return acc;
}

/* The group part of RollupDeltas.add_event. */
static int
add_group(PyObject *groups, PyObject *key, PyObject *cost, PyObject *const *tokens)
{
    PyObject *acc = PyDict_GetItemWithError(groups, key); /* borrowed */
    if (acc == NULL) {
        if (PyErr_Occurred())
            return -1;
        acc = new_acc(cost, tokens);
        if (acc == NULL)
            return -1;
        int rc = PyDict_SetItem(groups, key, acc);
        Py_DECREF(acc);
        return rc;
    }
    Py_INCREF(acc); /* ``add`` is Python code: hold our own reference across it */
    int rc = -1;
    PyObject *own = NULL;
    if (acc_add(acc, cost) < 0 || (own = get(acc, A_TOKENS)) == NULL)
        goto done;
    if (!PyList_CheckExact(own) || PyList_GET_SIZE(own) != 5) {
        PyErr_SetString(PyExc_TypeError, "Acc.tokens must be a list of 5 ints");
        goto done;
    }
    for (Py_ssize_t i = 0; i < 5; i++) {
        /* ``+`` may run Python code (a token of an int subclass) that changes the list: hold the
         * item, and check the index each time, as ``own[i] += tokens[i]`` does */
        if (i >= PyList_GET_SIZE(own)) {
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            goto done;
        }
        PyObject *item = Py_NewRef(PyList_GET_ITEM(own, i));
        PyObject *sum = PyNumber_Add(item, tokens[i]);
        Py_DECREF(item);
        if (sum == NULL || PyList_SetItem(own, i, sum) < 0) /* steals ``sum``, drops the old value */
            goto done;
    }
    rc = 0;
done:
    Py_XDECREF(own);
    Py_DECREF(acc);
    return rc;
}

/* The run part of RollupDeltas.add_event (after the run-path link). */
static int
add_run(PyObject *runs, PyObject *event, PyObject *run_id, PyObject *tenant, PyObject *agent,
        PyObject *us, PyObject *cost)
{
    PyObject *run = PyDict_GetItemWithError(runs, run_id); /* borrowed */
    if (run == NULL) {
        if (PyErr_Occurred())
            return -1;
        PyObject *zeros[5] = {zero, zero, zero, zero, zero};
        PyObject *acc = new_acc(cost, zeros);
        PyObject *parent = acc == NULL ? NULL : get(event, E_PARENT);
        PyObject *root = parent == NULL ? NULL : get(event, E_ROOT);
        PyObject *made = NULL;
        if (root != NULL) {
            PyObject *values[7] = {parent, root, tenant, agent, us, us, acc};
            made = make(t_run, R_PARENT, 7, values);
        }
        Py_XDECREF(acc);
        Py_XDECREF(parent);
        Py_XDECREF(root);
        if (made == NULL)
            return -1;
        int rc = PyDict_SetItem(runs, run_id, made);
        Py_DECREF(made);
        return rc;
    }
    Py_INCREF(run);
    int rc = -1;
    PyObject *bound = NULL, *racc = NULL, *count = NULL, *run_tenant = NULL, *parent = NULL;
    /* if us < run.first_us: run.first_us = us  elif us > run.last_us: run.last_us = us */
    if ((bound = get(run, R_FIRST)) == NULL)
        goto done;
    int below = PyObject_RichCompareBool(us, bound, Py_LT);
    if (below < 0)
        goto done;
    if (below) {
        if (set(run, R_FIRST, us) < 0)
            goto done;
    } else {
        Py_SETREF(bound, get(run, R_LAST));
        if (bound == NULL)
            goto done;
        int above = PyObject_RichCompareBool(us, bound, Py_GT);
        if (above < 0 || (above && set(run, R_LAST, us) < 0))
            goto done;
    }
    if ((racc = get(run, R_ACC)) == NULL || (count = get(racc, A_EVENTS)) == NULL)
        goto done;
    int link_only = PyObject_RichCompareBool(count, zero, Py_EQ);
    if (link_only < 0)
        goto done;
    if (link_only) { /* known so far only as an ancestor of other runs (a link) */
        if ((parent = get(run, R_PARENT)) == NULL)
            goto done;
        int has_parent = PyObject_IsTrue(parent);
        if (has_parent < 0)
            goto done;
        if (!has_parent) {
            Py_SETREF(parent, get(event, E_PARENT));
            if (parent == NULL)
                goto done;
        }
        if (set(run, R_PARENT, parent) < 0 || set(run, R_TENANT, tenant) < 0 || set(run, R_AGENT, agent) < 0)
            goto done;
    } else {
        if ((run_tenant = get(run, R_TENANT)) == NULL)
            goto done;
        int differs = PyObject_RichCompareBool(run_tenant, tenant, Py_NE);
        if (differs < 0 || (differs && set(run, R_TENANT, h_several) < 0))
            goto done;
    }
    if (acc_add(racc, cost) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(bound);
    Py_XDECREF(parent);
    Py_XDECREF(run_tenant);
    Py_XDECREF(count);
    Py_XDECREF(racc);
    Py_DECREF(run);
    return rc;
}

/* One event: its row (returned) and its deltas. ``*day_number``/``*day`` cache the last day. */
static PyObject *
one_event(PyObject *event, PyObject *event_id, PyObject *payload, PyObject *deltas, PyObject *groups,
          PyObject *runs, long long *day_number, PyObject **day, int raw)
{
    PyObject *row = NULL, *moment = NULL, *us = NULL, *tenant = NULL, *agent = NULL, *key = NULL;
    PyObject *usage = NULL, *cost = NULL, *run_id = NULL, *path = NULL, *text = NULL, *bytes = NULL;
    PyObject *k[9] = {NULL};       /* the rollup key */
    PyObject *tokens[5] = {NULL};
    PyObject *tail[2] = {NULL};    /* unpriced_reason, price_version */

    if ((moment = get(event, E_TIME)) == NULL)
        goto fail;
    long long micro;
    if ((us = epoch_us(moment, &micro)) == NULL)
        goto fail;
    /* day_of(us), called once per day seen: the batch's events are mostly of one or two days */
    long long number = micro >= 0 ? micro / US_PER_DAY : -((-micro + US_PER_DAY - 1) / US_PER_DAY);
    if (*day == NULL || number != *day_number) {
        PyObject *text_day = PyObject_CallOneArg(h_day_of, us);
        if (text_day == NULL)
            goto fail;
        Py_XSETREF(*day, text_day);
        *day_number = number;
    }
    /* rollup_key's reads, in its order; none once one has failed (a property of a subclass is
     * Python code, which must not run with an exception set) */
    if ((tenant = get(event, E_TENANT)) == NULL)
        goto fail;
    k[0] = or_empty(Py_NewRef(tenant));
    k[1] = Py_NewRef(*day);
    if ((k[2] = or_empty(get(event, E_FEATURE))) == NULL || (agent = get(event, E_AGENT)) == NULL)
        goto fail;
    k[3] = or_empty(Py_NewRef(agent));
    if ((k[4] = or_empty(get(event, E_MODEL))) == NULL || (k[5] = or_empty(get(event, E_PROVIDER))) == NULL
        || (k[6] = get(event, E_OPERATION)) == NULL || (k[7] = get(event, E_ENVIRONMENT)) == NULL
        || (k[8] = tenant == Py_None ? or_empty(get(event, E_ORIGIN)) : Py_NewRef(empty)) == NULL)
        goto fail;
    if ((key = PyTuple_New(9)) == NULL)
        goto fail;
    for (int i = 0; i < 9; i++)
        PyTuple_SET_ITEM(key, i, Py_NewRef(k[i]));
    if ((usage = get(event, E_USAGE)) == NULL)
        goto fail;
    for (int i = 0; i < 5; i++) {
        if ((tokens[i] = get(usage, U_TOK0 + i)) == NULL)
            goto fail;
    }
    if ((cost = get(event, E_COST)) == NULL)
        goto fail;

    /* RollupDeltas.add_event(event, key, us, tokens) */
    if (add_group(groups, key, cost, tokens) < 0 || (run_id = get(event, E_RUN_ID)) == NULL)
        goto fail;
    if (run_id != Py_None) {
        if ((path = get(event, E_RUN_PATH)) == NULL)
            goto fail;
        int linked = PyObject_IsTrue(path);
        if (linked < 0)
            goto fail;
        if (linked) {
            PyObject *root = get(event, E_ROOT);
            if (root == NULL)
                goto fail;
            PyObject *done = PyObject_CallFunctionObjArgs(h_link, deltas, path, root, us, NULL);
            Py_DECREF(root);
            if (done == NULL)
                goto fail;
            Py_DECREF(done);
        }
        if (add_run(runs, event, run_id, tenant, agent, us, cost) < 0)
            goto fail;
    }

    /* the row, in INSERT_EVENT's order */
    if ((text = cost == Py_None ? Py_NewRef(empty) : plain(cost)) == NULL
        || (tail[0] = or_empty(get(event, E_REASON))) == NULL || (tail[1] = or_empty(get(event, E_VERSION))) == NULL)
        goto fail;
    if (payload == NULL) {
        PyObject *encoded = PyObject_CallOneArg(h_encode, event);
        if (encoded == NULL)
            goto fail;
        bytes = raw && PyBytes_CheckExact(encoded) ? Py_NewRef(encoded) : PyByteArray_FromObject(encoded);
        Py_DECREF(encoded);
    } else {
        bytes = raw && PyBytes_CheckExact(payload) ? Py_NewRef(payload) : PyByteArray_FromObject(payload);
    }
    if (bytes == NULL || (row = PyTuple_New(22)) == NULL)
        goto fail;
    PyTuple_SET_ITEM(row, 0, Py_NewRef(event_id));
    PyTuple_SET_ITEM(row, 1, Py_NewRef(us));
    PyTuple_SET_ITEM(row, 2, Py_NewRef(k[1]));
    PyTuple_SET_ITEM(row, 3, Py_NewRef(k[0]));
    for (int i = 2; i < 9; i++)
        PyTuple_SET_ITEM(row, i + 2, Py_NewRef(k[i]));
    PyTuple_SET_ITEM(row, 11, Py_NewRef(run_id == Py_None ? empty : run_id));
    PyTuple_SET_ITEM(row, 12, Py_NewRef(cost == Py_None ? zero : one));
    PyTuple_SET_ITEM(row, 13, Py_NewRef(text));
    PyTuple_SET_ITEM(row, 14, Py_NewRef(tail[0]));
    PyTuple_SET_ITEM(row, 15, Py_NewRef(tail[1]));
    for (int i = 0; i < 5; i++)
        PyTuple_SET_ITEM(row, 16 + i, Py_NewRef(tokens[i]));
    PyTuple_SET_ITEM(row, 21, Py_NewRef(bytes));

fail:
    Py_XDECREF(moment);
    Py_XDECREF(us);
    Py_XDECREF(tenant);
    Py_XDECREF(agent);
    Py_XDECREF(key);
    Py_XDECREF(usage);
    Py_XDECREF(cost);
    Py_XDECREF(run_id);
    Py_XDECREF(path);
    Py_XDECREF(text);
    Py_XDECREF(bytes);
    for (int i = 0; i < 9; i++)
        Py_XDECREF(k[i]);
    for (int i = 0; i < 5; i++)
        Py_XDECREF(tokens[i]);
    Py_XDECREF(tail[0]);
    Py_XDECREF(tail[1]);
    return row;
}

static PyObject *
event_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "event_rows(events, payloads, first, deltas, raw=False)");
        return NULL;
    }
    int raw = nargs == 5 ? PyObject_IsTrue(args[4]) : 0;
    if (raw < 0)
        return NULL;
    if (t_acc == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "outlay.ledger._speedups is not configured");
        return NULL;
    }
    PyObject *events = args[0], *payloads = args[1], *first = args[2], *deltas = args[3];
    if (!PyDict_Check(first)) {
        PyErr_SetString(PyExc_TypeError, "first must be a dict");
        return NULL;
    }
    PyObject *groups = PyObject_GetAttr(deltas, s_groups);
    PyObject *runs = groups == NULL ? NULL : PyObject_GetAttr(deltas, s_runs);
    PyObject *rows = runs == NULL ? NULL : PyList_New(PyDict_GET_SIZE(first));
    PyObject *day = NULL;
    long long day_number = 0;
    if (rows == NULL)
        goto fail;
    if (!PyDict_CheckExact(groups) || !PyDict_CheckExact(runs)) {
        PyErr_SetString(PyExc_TypeError, "deltas.groups and deltas.runs must be dicts");
        goto fail;
    }
    /* ``rows`` has room for ``size`` rows: the size ``first`` must keep (a dict iterator raises
     * at its next step when it changed); if its keys change (same size), no more than ``size``. */
    Py_ssize_t position = 0, count = 0, size = PyList_GET_SIZE(rows);
    PyObject *key, *value;
    while (PyDict_Next(first, &position, &key, &value)) {
        if (PyDict_GET_SIZE(first) != size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto fail;
        }
        if (count == size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary keys changed during iteration");
            goto fail;
        }
        /* Borrowed from ``first``, which Python code run below (a sequence's __getitem__, a
         * property of a subclass) may change: our own references, as ``first.items()`` holds. */
        PyObject *event_id = Py_NewRef(key), *index_obj = Py_NewRef(value);
        PyObject *event = NULL, *payload = NULL, *row = NULL;
        Py_ssize_t index = PyNumber_AsSsize_t(index_obj, PyExc_IndexError);
        if ((index != -1 || !PyErr_Occurred()) && (event = PySequence_GetItem(events, index)) != NULL
            && (payloads == Py_None || (payload = PySequence_GetItem(payloads, index)) != NULL))
            row = one_event(event, event_id, payload, deltas, groups, runs, &day_number, &day, raw);
        Py_XDECREF(event);
        Py_XDECREF(payload);
        Py_DECREF(event_id);
        Py_DECREF(index_obj);
        if (row == NULL)
            goto fail;
        PyList_SET_ITEM(rows, count++, row);
    }
    if (count != size || PyDict_GET_SIZE(first) != size) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        goto fail;
    }
    Py_DECREF(groups);
    Py_DECREF(runs);
    Py_XDECREF(day);
    return rows;
fail:
    Py_XDECREF(groups);
    Py_XDECREF(runs);
    Py_XDECREF(rows);
    Py_XDECREF(day);
    return NULL;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *time_us, *day_of, *encode, *event, *usage, *acc, *run, *link, *add, *several;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOU:configure", &time_us, &day_of, &encode, &event, &usage, &acc,
                          &run, &link, &add, &several))
        return NULL;
    if (allocatable(acc) < 0 || allocatable(run) < 0)
        return NULL;
    /* All or nothing: a configure that fails leaves the previous configuration whole. */
    Field next[N_FIELDS] = {{NULL, NULL, 0}};
    if (resolve(next, event, E_TIME, E_VERSION) < 0 || resolve(next, usage, U_TOK0, U_TOK4) < 0
        || resolve(next, acc, A_EVENTS, A_TOKENS) < 0 || resolve(next, run, R_PARENT, R_ACC) < 0) {
        for (int i = 0; i < N_FIELDS; i++) {
            Py_XDECREF(next[i].name);
            Py_XDECREF(next[i].type);
        }
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        Py_XSETREF(fields[i].name, next[i].name);
        Py_XSETREF(fields[i].type, next[i].type);
        fields[i].offset = next[i].offset;
    }
    Py_XSETREF(h_time_us, Py_NewRef(time_us));
    Py_XSETREF(h_day_of, Py_NewRef(day_of));
    Py_XSETREF(h_encode, Py_NewRef(encode));
    Py_XSETREF(h_link, Py_NewRef(link));
    Py_XSETREF(h_add, Py_NewRef(add));
    Py_XSETREF(h_several, Py_NewRef(several));
    Py_XSETREF(t_acc, (PyTypeObject *)Py_NewRef(acc));
    Py_XSETREF(t_run, (PyTypeObject *)Py_NewRef(run));
    Py_RETURN_NONE;
}


/* ---- insert_rows: executemany of the ledger's writes, bound and stepped in C --------------- *
 *
 * ``sqlite3.Cursor.executemany`` spends about as much per row on Python's side (checks, a type
 * dispatch and adapter lookup per value, statement bookkeeping) as SQLite spends inserting a
 * ledger row (docs/benchmarks.md). ``insert_rows`` binds the rows' values to a statement prepared
 * on the connection's own ``sqlite3 *`` handle and steps it, as executemany does: the same SQLite
 * calls, the changes counted the same way. Where executemany lets the GIL go and takes it back
 * around every row, the rows are read in blocks of 4,096 with the GIL held, then bound and stepped
 * with it let go: in a process where another thread is busy in Python, each take waits a switch
 * interval (5 ms), and row by row a batch of 40,000 took minutes (benchmarks.md).
 *
 * The SQLite functions are not linked in. ``configure_sqlite`` looks them up in the shared object
 * that implements ``sqlite3.Connection`` (``_sqlite3``, and the SQLite library it was loaded with,
 * searched from its own handle), so they are the code that made the handle; the library's version
 * must be the one ``sqlite3`` reports, and the caller self-tests the handle (``in_transaction``)
 * before offering ``insert_rows``. Where any of that fails (a ``_sqlite3`` with SQLite built in
 * and hidden, Windows), the ledger uses executemany. The handle is the first field after the object header of CPython's
 * ``pysqlite_Connection``, in every version since 2.5.
 */
#ifndef _WIN32
#include <dlfcn.h>
#define HAVE_DL 1
#endif

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;
typedef struct sqlite3_context sqlite3_context;
typedef struct sqlite3_value sqlite3_value;
#define SQ_INTEGER 1
#define SQ_FLOAT 2
#define SQ_TEXT 3
#define SQ_BLOB 4
#define SQ_NULL 5
#define SQ_UTF8 1
#define SQ_DETERMINISTIC 0x800
#define SQ_TRANSIENT ((void (*)(void *))-1)
#define SQ_OK 0
#define SQ_ROW 100
#define SQ_DONE 101
#define SQ_STATIC ((void (*)(void *))0)

static struct {
    int (*prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
    int (*bind_int64)(sqlite3_stmt *, int, long long);
    int (*bind_double)(sqlite3_stmt *, int, double);
    int (*bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
    int (*bind_blob)(sqlite3_stmt *, int, const void *, int, void (*)(void *));
    int (*bind_null)(sqlite3_stmt *, int);
    int (*bind_parameter_count)(sqlite3_stmt *);
    int (*step)(sqlite3_stmt *);
    int (*reset)(sqlite3_stmt *);
    int (*finalize)(sqlite3_stmt *);
    int (*changes)(sqlite3 *);
    int (*extended_errcode)(sqlite3 *);
    const char *(*errmsg)(sqlite3 *);
    int (*get_autocommit)(sqlite3 *);
    int (*libversion_number)(void);
    int (*create_function_v2)(sqlite3 *, const char *, int, int, void *,
                              void (*)(sqlite3_context *, int, sqlite3_value **),
                              void (*)(sqlite3_context *, int, sqlite3_value **), void (*)(sqlite3_context *),
                              void (*)(void *));
    void *(*user_data)(sqlite3_context *);
    void *(*aggregate_context)(sqlite3_context *, int);
    int (*value_type)(sqlite3_value *);
    const unsigned char *(*value_text)(sqlite3_value *);
    int (*value_bytes)(sqlite3_value *);
    long long (*value_int64)(sqlite3_value *);
    double (*value_double)(sqlite3_value *);
    const void *(*value_blob)(sqlite3_value *);
    void (*result_value)(sqlite3_context *, sqlite3_value *);
    void (*result_text)(sqlite3_context *, const char *, int, void (*)(void *));
    void (*result_null)(sqlite3_context *);
    void (*result_error)(sqlite3_context *, const char *, int);
} sq;
static int sq_ready;                      /* 1 once configure_sqlite found the library */
static PyTypeObject *t_connection;        /* sqlite3.Connection */
static PyObject *e_integrity, *e_operational, *e_database, *e_data, *e_programming, *e_internal;
/* Rows read per block: each block is stepped with the GIL let go once. */
#define INSERT_BLOCK 4096

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} ConnectionHead;

static sqlite3 *
handle_of(PyObject *connection)
{
    if (!sq_ready) {
        PyErr_SetString(PyExc_RuntimeError, "outlay.ledger._speedups found no SQLite library to call");
        return NULL;
    }
    if (!PyObject_TypeCheck(connection, t_connection)) {
        PyErr_Format(PyExc_TypeError, "expected a sqlite3.Connection, got %.200s", Py_TYPE(connection)->tp_name);
        return NULL;
    }
    sqlite3 *db = ((ConnectionHead *)connection)->db;
    if (db == NULL)
        PyErr_SetString(e_programming, "Cannot operate on a closed database.");
    return db;
}

/* Raises the sqlite3 module's exception for ``code``, chosen as its own error mapping does, with
 * the message and ``sqlite_errorcode`` it would give. */
static void
raise_sqlite(sqlite3 *db, int code)
{
    PyObject *kind;
    switch (code & 0xff) {
    case 2: case 12: kind = e_internal; break;                       /* INTERNAL, NOTFOUND */
    case 7: PyErr_NoMemory(); return;                               /* NOMEM */
    case 18: kind = e_data; break;                                   /* TOOBIG */
    case 19: case 20: kind = e_integrity; break;                     /* CONSTRAINT, MISMATCH */
    case 21: kind = e_programming; break;                            /* MISUSE */
    case 1: case 3: case 4: case 5: case 6: case 8: case 9: case 10: case 13: case 14: case 15:
    case 16: case 17: kind = e_operational; break;                   /* ERROR, PERM, ... SCHEMA */
    default: kind = e_database;                                      /* CORRUPT, RANGE, ... */
    }
    PyObject *exc = PyObject_CallFunction(kind, "s", sq.errmsg(db));
    if (exc == NULL)
        return;
    PyObject *number = PyLong_FromLong(sq.extended_errcode(db));
    if (number == NULL || PyObject_SetAttrString(exc, "sqlite_errorcode", number) < 0) {
        Py_XDECREF(number);
        Py_DECREF(exc);
        return;
    }
    Py_DECREF(number);
    PyErr_SetObject(kind, exc);
    Py_DECREF(exc);
}

/* One value of a row, read from its Python object with the GIL held and bound without it. */
typedef struct {
    int kind; /* SQ_NULL, SQ_INTEGER, SQ_FLOAT, SQ_TEXT or SQ_BLOB */
    int size; /* bytes of a text or blob */
    union {
        long long integer;
        double real;
        const char *data;
    } v;
} Value;

/* The buffers exported while a block of rows is stepped (bytearray, memoryview: rare). */
typedef struct {
    Py_buffer *items;
    Py_ssize_t count, capacity;
} Views;

static void
release_views(Views *views)
{
    for (Py_ssize_t k = 0; k < views->count; k++)
        PyBuffer_Release(&views->items[k]);
    views->count = 0;
}

/* Reads ``row``'s values into ``out`` as the sqlite3 module binds them when no adapter is
 * registered (outlay registers none): int (bool too), float, str, None, and anything with a
 * buffer (bytes, bytearray, memoryview) as a blob; any other type is a ProgrammingError. Text and
 * blobs are read in place, and stay valid while the caller holds ``row``: a tuple's items cannot
 * change, a str's UTF-8 and a bytes' content are kept with it, and any other buffer stays exported
 * (``views``) until the block is stepped, so a bytearray resized meanwhile by another thread fails
 * instead of freeing it. */
static int
pack_row(PyObject *row, int width, Value *out, Views *views)
{
    if (!PyTuple_Check(row)) {
        PyErr_Format(PyExc_TypeError, "insert_rows takes rows as tuples, not %.200s", Py_TYPE(row)->tp_name);
        return -1;
    }
    if (PyTuple_GET_SIZE(row) != width) {
        PyErr_Format(e_programming, "Incorrect number of bindings supplied. The current statement uses %d, and"
                     " there are %zd supplied.", width, PyTuple_GET_SIZE(row));
        return -1;
    }
    for (int i = 0; i < width; i++) {
        PyObject *value = PyTuple_GET_ITEM(row, i);
        Value *slot = &out[i];
        if (value == Py_None) {
            slot->kind = SQ_NULL;
        } else if (PyLong_Check(value)) {
            int overflow;
            long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow) {
                PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to SQLite INTEGER");
                return -1;
            }
            if (number == -1 && PyErr_Occurred())
                return -1;
            slot->kind = SQ_INTEGER;
            slot->v.integer = number;
        } else if (PyUnicode_Check(value)) {
            Py_ssize_t size;
            const char *text = PyUnicode_AsUTF8AndSize(value, &size);
            if (text == NULL)
                return -1;
            if (size > INT_MAX) {
                PyErr_SetString(PyExc_OverflowError, "string longer than INT_MAX bytes");
                return -1;
            }
            slot->kind = SQ_TEXT;
            slot->size = (int)size;
            slot->v.data = text;
        } else if (PyFloat_Check(value)) {
            slot->kind = SQ_FLOAT;
            slot->v.real = PyFloat_AS_DOUBLE(value);
        } else if (PyBytes_Check(value)) { /* immutable: no export needed */
            if (PyBytes_GET_SIZE(value) > INT_MAX) {
                PyErr_SetString(PyExc_OverflowError, "BLOB longer than INT_MAX bytes");
                return -1;
            }
            slot->kind = SQ_BLOB;
            slot->size = (int)PyBytes_GET_SIZE(value);
            slot->v.data = PyBytes_AS_STRING(value);
        } else if (PyObject_CheckBuffer(value)) {
            if (views->count == views->capacity) {
                Py_ssize_t capacity = views->capacity ? views->capacity * 2 : 16;
                Py_buffer *items = PyMem_Resize(views->items, Py_buffer, capacity);
                if (items == NULL) {
                    PyErr_NoMemory();
                    return -1;
                }
                views->items = items;
                views->capacity = capacity;
            }
            Py_buffer *view = &views->items[views->count];
            if (PyObject_GetBuffer(value, view, PyBUF_SIMPLE) < 0)
                return -1;
            views->count++;
            if (view->len > INT_MAX) {
                PyErr_SetString(PyExc_OverflowError, "BLOB longer than INT_MAX bytes");
                return -1;
            }
            slot->kind = SQ_BLOB;
            slot->size = (int)view->len;
            slot->v.data = view->len ? view->buf : "";
        } else {
            PyErr_Format(e_programming, "Error binding parameter %d: type '%.200s' is not supported", i + 1,
                         Py_TYPE(value)->tp_name);
            return -1;
        }
    }
    return 0;
}

/* Binds one packed row (no GIL needed): SQ_OK, or SQLite's code. A blob's pointer is never NULL
 * (that would bind NULL): an empty one points at "". */
static int
bind_values(sqlite3_stmt *stmt, const Value *values, int width)
{
    for (int i = 0; i < width; i++) {
        const Value *value = &values[i];
        int rc;
        switch (value->kind) {
        case SQ_NULL: rc = sq.bind_null(stmt, i + 1); break;
        case SQ_INTEGER: rc = sq.bind_int64(stmt, i + 1, value->v.integer); break;
        case SQ_FLOAT: rc = sq.bind_double(stmt, i + 1, value->v.real); break;
        case SQ_TEXT: rc = sq.bind_text(stmt, i + 1, value->v.data, value->size, SQ_STATIC); break;
        default: rc = sq.bind_blob(stmt, i + 1, value->v.data, value->size, SQ_STATIC); break;
        }
        if (rc != SQ_OK)
            return rc;
    }
    return SQ_OK;
}

/* ``sql`` past whitespace and comments, as executemany skips them after a statement's ';'. */
static const char *
skip_blank(const char *sql)
{
    for (;;) {
        if (*sql == ' ' || *sql == '\t' || *sql == '\f' || *sql == '\n' || *sql == '\r') {
            sql++;
        } else if (sql[0] == '-' && sql[1] == '-') {
            sql = strchr(sql, '\n');
            if (sql == NULL)
                return "";
        } else if (sql[0] == '/' && sql[1] == '*') {
            sql = strstr(sql + 2, "*/");
            if (sql == NULL)
                return "";
            sql += 2;
        } else {
            return sql;
        }
    }
}

/* sqlite3_finalize with the GIL let go, as executemany's statements are: the last statement of a
 * connection closed meanwhile frees its handle there. */
static void
finalize(sqlite3_stmt *stmt)
{
    Py_BEGIN_ALLOW_THREADS
    sq.finalize(stmt);
    Py_END_ALLOW_THREADS
}

static PyObject *
insert_rows(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyUnicode_Check(args[1]) || !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "insert_rows(connection, sql: str, rows: list)");
        return NULL;
    }
    sqlite3 *db = handle_of(args[0]);
    if (db == NULL)
        return NULL;
    Py_ssize_t length;
    const char *sql = PyUnicode_AsUTF8AndSize(args[1], &length);
    if (sql == NULL)
        return NULL;
    if (length > INT_MAX) {
        PyErr_SetString(e_data, "query string is too large");
        return NULL;
    }
    if (strlen(sql) != (size_t)length) { /* SQLite would stop at it, and run what comes before */
        PyErr_SetString(e_programming, "the query contains a null character");
        return NULL;
    }
    /* Preparing may read the schema, and so wait out the busy timeout on a locked file: the GIL is
     * let go for it, as executemany does. A statement of ours is on the handle first (prepared
     * with the GIL held, it reads no schema): a close() by another thread meanwhile then leaves
     * the handle a zombie until it is finalized, instead of freeing it under the prepare. */
    sqlite3_stmt *pin = NULL;
    int rc = sq.prepare_v2(db, "SELECT 1", -1, &pin, NULL);
    if (rc != SQ_OK) {
        raise_sqlite(db, rc);
        return NULL;
    }
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = sq.prepare_v2(db, sql, (int)length, &stmt, &tail);
    Py_END_ALLOW_THREADS
    if (rc != SQ_OK) {
        raise_sqlite(db, rc); /* the pin still holds the handle for its message */
        finalize(pin);
        return NULL;
    }
    finalize(pin); /* ``stmt`` holds the handle from here */
    if (stmt == NULL || (tail != NULL && *skip_blank(tail) != '\0')) {
        finalize(stmt);
        PyErr_SetString(e_programming, "insert_rows runs exactly one statement");
        return NULL;
    }
    int width = sq.bind_parameter_count(stmt);
    /* Rows are read in blocks with the GIL held, then bound and stepped with it let go: another
     * thread runs while a block is written (the ledger builds its next rows meanwhile). What
     * executemany stores, counts and raises is kept, in its order: the rows before one that
     * cannot be read are written first, then that row's error is raised. */
    Py_ssize_t block = PyList_GET_SIZE(args[2]);
    block = width == 0 || block < 1 ? 1 : block > INSERT_BLOCK ? INSERT_BLOCK : block;
    Value *values = PyMem_New(Value, block * (width > 0 ? width : 1));
    PyObject **held = PyMem_New(PyObject *, block);
    Views views = {NULL, 0, 0};
    if (values == NULL || held == NULL) {
        PyMem_Free(values);
        PyMem_Free(held);
        finalize(stmt);
        return PyErr_NoMemory();
    }
    PyObject *rows = Py_NewRef(args[2]); /* a list may shrink under us (another thread): checked */
    long long changed = 0;
    int failed = 0;
    for (Py_ssize_t start = 0; !failed;) {
        Py_ssize_t packed = 0, kept = 0;
        PyObject *bad_type = NULL, *bad_value = NULL, *bad_trace = NULL;
        while (packed < block && start + packed < PyList_GET_SIZE(rows)) {
            PyObject *row = held[kept++] = Py_NewRef(PyList_GET_ITEM(rows, start + packed));
            if (pack_row(row, width, values + packed * width, &views) < 0) {
                PyErr_Fetch(&bad_type, &bad_value, &bad_trace);
                break;
            }
            packed++;
        }
        if (kept == 0)
            break; /* every row written */
        int rc_bind = SQ_OK, rc_step = SQ_OK, returned = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < packed; r++) {
            rc_bind = bind_values(stmt, values + r * width, width);
            if (rc_bind != SQ_OK)
                break;
            int stepped = sq.step(stmt);
            if (stepped == SQ_DONE)
                changed += sq.changes(db);
            rc_step = sq.reset(stmt); /* a failed step's error, with its message kept for errmsg */
            if (stepped == SQ_ROW) {
                returned = 1;
                break;
            }
            if (rc_step != SQ_OK)
                break;
        }
        Py_END_ALLOW_THREADS
        if (returned || rc_bind != SQ_OK || rc_step != SQ_OK) {
            /* a row written before the unreadable one failed first: its error is the one raised */
            Py_XDECREF(bad_type);
            Py_XDECREF(bad_value);
            Py_XDECREF(bad_trace);
            if (returned)
                /* a row (a SELECT, RETURNING) before its statement is done: no count to give */
                PyErr_SetString(e_programming, "insert_rows runs statements that return no rows");
            else
                raise_sqlite(db, rc_bind != SQ_OK ? rc_bind : rc_step);
            failed = 1;
        } else if (bad_type != NULL) {
            PyErr_Restore(bad_type, bad_value, bad_trace);
            failed = 1;
        }
        release_views(&views);
        for (Py_ssize_t k = 0; k < kept; k++)
            Py_DECREF(held[k]);
        start += packed;
    }
    PyMem_Free(views.items);
    PyMem_Free(values);
    PyMem_Free(held);
    Py_DECREF(rows);
    finalize(stmt);
    return failed ? NULL : PyLong_FromLongLong(changed);
}

#ifdef HAVE_DL
/* The shared object holding the C code of ``connection``'s ``cursor`` method, opened again
 * (RTLD_NOLOAD: only if loaded), or NULL. That is the object that made the handles: CPython's
 * ``_sqlite3``, or a replacement module such as pysqlite3 with its own SQLite. */
static void *
library_of(PyObject *connection)
{
    PyObject *method = PyObject_GetAttrString(connection, "cursor");
    if (method == NULL) {
        PyErr_Clear();
        return NULL;
    }
    void *code = NULL;
    if (PyObject_TypeCheck(method, &PyMethodDescr_Type))
        code = (void *)((PyMethodDescrObject *)method)->d_method->ml_meth;
    Py_DECREF(method);
    Dl_info info;
    if (code == NULL || dladdr(code, &info) == 0 || info.dli_fname == NULL)
        return NULL;
    return dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
}
#endif

/* configure_sqlite(version, Connection, IntegrityError, OperationalError, DatabaseError, DataError,
 * ProgrammingError, InternalError) -> bool: whether the SQLite functions were found in the shared
 * object that implements ``Connection`` (and its dependencies, searched from its own handle) and
 * are of ``version`` (``sqlite3.sqlite_version_info`` as SQLite numbers it: 3040001 for 3.40.1).
 * A ``Connection`` whose code is elsewhere, or whose SQLite is built in and hidden, gets False. */
static PyObject *
configure_sqlite(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *connection, *errors[6];
    int version;
    if (!PyArg_ParseTuple(args, "iO!OOOOOO:configure_sqlite", &version, &PyType_Type, &connection, &errors[0],
                          &errors[1], &errors[2], &errors[3], &errors[4], &errors[5]))
        return NULL;
    Py_XSETREF(t_connection, (PyTypeObject *)Py_NewRef(connection));
    Py_XSETREF(e_integrity, Py_NewRef(errors[0]));
    Py_XSETREF(e_operational, Py_NewRef(errors[1]));
    Py_XSETREF(e_database, Py_NewRef(errors[2]));
    Py_XSETREF(e_data, Py_NewRef(errors[3]));
    Py_XSETREF(e_programming, Py_NewRef(errors[4]));
    Py_XSETREF(e_internal, Py_NewRef(errors[5]));
    sq_ready = 0;
#ifdef HAVE_DL
    void *handle = library_of(connection);
    if (handle == NULL)
        Py_RETURN_FALSE;
    struct {
        void **slot;
        const char *name;
    } wanted[] = {
        {(void **)&sq.prepare_v2, "sqlite3_prepare_v2"},
        {(void **)&sq.bind_int64, "sqlite3_bind_int64"},
        {(void **)&sq.bind_double, "sqlite3_bind_double"},
        {(void **)&sq.bind_text, "sqlite3_bind_text"},
        {(void **)&sq.bind_blob, "sqlite3_bind_blob"},
        {(void **)&sq.bind_null, "sqlite3_bind_null"},
        {(void **)&sq.bind_parameter_count, "sqlite3_bind_parameter_count"},
        {(void **)&sq.step, "sqlite3_step"},
        {(void **)&sq.reset, "sqlite3_reset"},
        {(void **)&sq.finalize, "sqlite3_finalize"},
        {(void **)&sq.changes, "sqlite3_changes"},
        {(void **)&sq.extended_errcode, "sqlite3_extended_errcode"},
        {(void **)&sq.errmsg, "sqlite3_errmsg"},
        {(void **)&sq.get_autocommit, "sqlite3_get_autocommit"},
        {(void **)&sq.libversion_number, "sqlite3_libversion_number"},
        {(void **)&sq.create_function_v2, "sqlite3_create_function_v2"},
        {(void **)&sq.user_data, "sqlite3_user_data"},
        {(void **)&sq.aggregate_context, "sqlite3_aggregate_context"},
        {(void **)&sq.value_type, "sqlite3_value_type"},
        {(void **)&sq.value_text, "sqlite3_value_text"},
        {(void **)&sq.value_bytes, "sqlite3_value_bytes"},
        {(void **)&sq.value_int64, "sqlite3_value_int64"},
        {(void **)&sq.value_double, "sqlite3_value_double"},
        {(void **)&sq.value_blob, "sqlite3_value_blob"},
        {(void **)&sq.result_value, "sqlite3_result_value"},
        {(void **)&sq.result_text, "sqlite3_result_text"},
        {(void **)&sq.result_null, "sqlite3_result_null"},
        {(void **)&sq.result_error, "sqlite3_result_error"},
    };
    int found = 1;
    for (size_t i = 0; found && i < sizeof wanted / sizeof wanted[0]; i++) {
        *wanted[i].slot = dlsym(handle, wanted[i].name);
        found = *wanted[i].slot != NULL;
    }
    /* RTLD_NOLOAD took a reference of its own: the module keeps the library loaded */
    dlclose(handle);
    if (!found || sq.libversion_number() != version)
        Py_RETURN_FALSE;
    sq_ready = 1;
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

/* in_transaction(connection) -> bool, read through the handle: the self-test of configure_sqlite. */
static PyObject *
in_transaction(PyObject *Py_UNUSED(module), PyObject *connection)
{
    sqlite3 *db = handle_of(connection);
    if (db == NULL)
        return NULL;
    return PyBool_FromLong(!sq.get_autocommit(db));
}


/* ---- outlay_dadd in C --------------------------------------------------------------------- *
 *
 * The rollup upserts add each batch's cost to a row's with ``outlay_dadd(cost, excluded.cost)``:
 * exact decimal TEXT, NULL for "no priced event". In Python (``_sqlite_schema.dadd``) each call
 * crosses into the interpreter and parses two Decimals. Here two plain decimals (``-?d+(.d+)?``,
 * what the ledger writes) are added digit by digit and written out as ``money_str`` does; anything
 * else (another form, a sum of more than MONEY_CONTEXT's 60 digits, a non-text value) is handed to
 * the Python function, so the result, or the error, is always Python's. */

#define DADD_MAX 96 /* digits on either side of the point handled here; longer goes to Python */

typedef struct {
    int negative;
    const char *whole, *fraction;
    int whole_n, fraction_n;
} Plain;

static int
parse_plain(const unsigned char *text, int size, Plain *out)
{
    int at = 0;
    out->negative = size > 0 && text[0] == '-';
    at = out->negative;
    int start = at;
    while (at < size && text[at] >= '0' && text[at] <= '9')
        at++;
    out->whole = (const char *)text + start;
    out->whole_n = at - start;
    out->fraction = NULL;
    out->fraction_n = 0;
    if (out->whole_n == 0 || out->whole_n > DADD_MAX)
        return -1;
    if (at < size && text[at] == '.') {
        int begin = ++at;
        while (at < size && text[at] >= '0' && text[at] <= '9')
            at++;
        out->fraction = (const char *)text + begin;
        out->fraction_n = at - begin;
        if (out->fraction_n == 0 || out->fraction_n > DADD_MAX)
            return -1;
    }
    return at == size ? 0 : -1;
}

/* The digit at ``i`` (0: the last of the fraction part, counted leftwards) of ``p`` scaled to
 * ``places`` decimal places. */
static int
digit_at(const Plain *p, int places, int i)
{
    int shift = places - p->fraction_n; /* zeros appended to p's fraction */
    if (i < shift)
        return 0;
    i -= shift;
    if (i < p->fraction_n)
        return p->fraction[p->fraction_n - 1 - i] - '0';
    i -= p->fraction_n;
    return i < p->whole_n ? p->whole[p->whole_n - 1 - i] - '0' : 0;
}

/* a + b written out as money_str does, into ``out`` (room for 2 * DADD_MAX + 8); -1: leave it to
 * Python (more than 60 significant digits: MONEY_CONTEXT would round, or refuse). */
static int
add_plain(const Plain *a, const Plain *b, char *out)
{
    int places = a->fraction_n > b->fraction_n ? a->fraction_n : b->fraction_n;
    int width = places + (a->whole_n > b->whole_n ? a->whole_n : b->whole_n) + 1;
    unsigned char sum[2 * DADD_MAX + 2]; /* least significant first */
    int negative;
    if (a->negative == b->negative) {
        int carry = 0;
        for (int i = 0; i < width; i++) {
            int d = digit_at(a, places, i) + digit_at(b, places, i) + carry;
            sum[i] = (unsigned char)(d % 10);
            carry = d / 10;
        }
        negative = a->negative;
    } else {
        int order = 0; /* |a| against |b| */
        for (int i = width - 1; i >= 0 && order == 0; i--)
            order = digit_at(a, places, i) - digit_at(b, places, i);
        const Plain *big = order >= 0 ? a : b, *small = order >= 0 ? b : a;
        int borrow = 0;
        for (int i = 0; i < width; i++) {
            int d = digit_at(big, places, i) - digit_at(small, places, i) - borrow;
            borrow = d < 0;
            sum[i] = (unsigned char)(d + (borrow ? 10 : 0));
        }
        negative = big->negative;
    }
    int top = width - 1;
    while (top > 0 && sum[top] == 0)
        top--;
    if (top + 1 > 60) /* the coefficient's digits: past the context's precision */
        return -1;
    int low = 0; /* the fraction's trailing zeros go */
    while (low < places && sum[low] == 0)
        low++;
    int is_zero = top == 0 && sum[0] == 0;
    char *w = out;
    if (negative && !is_zero)
        *w++ = '-';
    int whole_top = top >= places ? top : places; /* at least the 0 before the point */
    for (int i = whole_top; i >= places; i--)
        *w++ = (char)('0' + (i <= top ? sum[i] : 0));
    if (low < places) {
        *w++ = '.';
        for (int i = places - 1; i >= low; i--)
            *w++ = (char)('0' + sum[i]);
    }
    *w = '\0';
    return (int)(w - out);
}

/* A value SQLite passes a user function, as the sqlite3 module hands it to Python. */
static PyObject *
value_to_python(sqlite3_value *value)
{
    switch (sq.value_type(value)) {
    case SQ_INTEGER: return PyLong_FromLongLong(sq.value_int64(value));
    case SQ_FLOAT: return PyFloat_FromDouble(sq.value_double(value));
    case SQ_TEXT:
        return PyUnicode_DecodeUTF8((const char *)sq.value_text(value), sq.value_bytes(value), NULL);
    case SQ_BLOB: return PyBytes_FromStringAndSize(sq.value_blob(value), sq.value_bytes(value));
    default: return Py_NewRef(Py_None);
    }
}

/* A Python function's result (a str or None) as the SQL result; anything else, or NULL (it
 * raised), as SQLite's error ``failed``, the message the sqlite3 module gives. The GIL is held. */
static void
result_from_python(sqlite3_context *context, PyObject *result, const char *failed)
{
    if (result == Py_None) {
        sq.result_null(context);
    } else if (result != NULL && PyUnicode_Check(result)) {
        Py_ssize_t size;
        const char *text = PyUnicode_AsUTF8AndSize(result, &size);
        if (text != NULL && size <= INT_MAX)
            sq.result_text(context, text, (int)size, SQ_TRANSIENT);
        else
            sq.result_error(context, failed, -1);
    } else {
        sq.result_error(context, failed, -1);
    }
}

/* Python's outlay_dadd on two non-NULL arguments (the GIL taken: the step may run without it):
 * its str, or SQLite's error for a user function that raised, as the sqlite3 module reports it. */
static void
dadd_python(sqlite3_context *context, int argc, sqlite3_value **argv)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *args = PyTuple_New(argc);
    for (int i = 0; args != NULL && i < argc; i++) {
        PyObject *value = value_to_python(argv[i]);
        if (value == NULL)
            Py_CLEAR(args);
        else
            PyTuple_SET_ITEM(args, i, value);
    }
    PyObject *result = args == NULL ? NULL : PyObject_Call((PyObject *)sq.user_data(context), args, NULL);
    Py_XDECREF(args);
    result_from_python(context, result, "user-defined function raised exception");
    Py_XDECREF(result);
    PyErr_Clear();
    PyGILState_Release(gil);
}

static void
dadd_sql(sqlite3_context *context, int argc, sqlite3_value **argv)
{
    int left = sq.value_type(argv[0]), right = sq.value_type(argv[1]);
    if (left == SQ_NULL || right == SQ_NULL) { /* NULL is "no priced event": the other, as it is */
        sq.result_value(context, argv[left == SQ_NULL ? 1 : 0]);
        return;
    }
    if (left == SQ_TEXT && right == SQ_TEXT) {
        Plain a, b;
        char out[2 * DADD_MAX + 8];
        const unsigned char *x = sq.value_text(argv[0]);
        int xn = sq.value_bytes(argv[0]);
        const unsigned char *y = sq.value_text(argv[1]);
        int yn = sq.value_bytes(argv[1]);
        int n;
        if (x != NULL && y != NULL && parse_plain(x, xn, &a) == 0 && parse_plain(y, yn, &b) == 0
            && (n = add_plain(&a, &b, out)) >= 0) {
            sq.result_text(context, out, n, SQ_TRANSIENT);
            return;
        }
    }
    dadd_python(context, argc, argv);
}

static void
drop_fallback(void *fallback)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)fallback);
    PyGILState_Release(gil);
}

/* Register ``name`` on the connection in ``args`` (connection, callable): a scalar (``func``) or an
 * aggregate (``step``, ``final``) in C, the callable its user data (the Python function or class
 * it hands what it leaves to), released with the function. */
static PyObject *
register_function(PyObject *args, const char *name, int nargs, int flags,
                  void (*func)(sqlite3_context *, int, sqlite3_value **),
                  void (*step)(sqlite3_context *, int, sqlite3_value **), void (*final)(sqlite3_context *))
{
    PyObject *connection, *python;
    if (!PyArg_ParseTuple(args, "OO", &connection, &python))
        return NULL;
    if (!PyCallable_Check(python)) {
        PyErr_Format(PyExc_TypeError, "%s needs a callable for what it leaves to Python", name);
        return NULL;
    }
    sqlite3 *db = handle_of(connection);
    if (db == NULL)
        return NULL;
    Py_INCREF(python); /* released by drop_fallback, also when the registration fails */
    int rc = sq.create_function_v2(db, name, nargs, flags, python, func, step, final, drop_fallback);
    if (rc != SQ_OK) {
        raise_sqlite(db, rc);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* register_dadd(connection, fallback): outlay_dadd on ``connection`` in C, ``fallback`` (Python's
 * own outlay_dadd) for what it leaves. */
static PyObject *
register_dadd(PyObject *Py_UNUSED(module), PyObject *args)
{
    return register_function(args, "outlay_dadd", 2, SQ_UTF8 | SQ_DETERMINISTIC, dadd_sql, NULL, NULL);
}

/* ---- append_held: write(2) without letting the GIL go -------------------------------------- */

#include <errno.h>
#include <unistd.h>

/* os.write lets the GIL go around its write(2) and takes it back after. A journal line is a ~1 us
 * append to the page cache, but with another thread of the process busy in Python (a batching
 * recorder's, the gateway's event loop) taking the GIL back waits a switch interval: measured +32
 * instead of +3 us per metered call. The GIL is held instead, as for any short call into C; an
 * interrupted write runs the signal handlers and is retried (PEP 475), as os.write does. */
static PyObject *
append_held(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*:append_held", &fd, &view))
        return NULL;
    ssize_t written;
    for (;;) {
        written = write(fd, view.buf, (size_t)view.len);
        if (written >= 0 || errno != EINTR)
            break;
        if (PyErr_CheckSignals() < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int saved = errno;
    PyBuffer_Release(&view);
    if (written < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(written);
}

/* ---- outlay_dsum in C --------------------------------------------------------------------- *
 *
 * Every report sums rollup rows with the aggregate ``outlay_dsum(cost)``: in Python
 * (``_sqlite_schema.DecimalSum``) each row crosses into the interpreter and parses a Decimal,
 * ~1.1 us a row (a month's breakdown by day over 10M events reads 188k rows: 205 of its 267 ms).
 * Here plain decimals are added as outlay_dadd adds them. The first value the C code does not
 * take (another form, a non-text value, a sum past 60 digits) hands the group to the Python
 * aggregate, given the exact sum so far as its first value: MONEY_CONTEXT's sums are exact, so
 * the result, or the error, is Python's. */

typedef struct {
    int state; /* 0: nothing summed yet (NULL), 1: the sum in ``text``, 2: Python's (``python``) */
    int failed;
    int n;
    PyObject *python;
    char text[2 * DADD_MAX + 8];
} DsumAcc;

/* Hand the group to the Python aggregate (its class is the function's user data): a new instance,
 * stepped with the sum so far, then with ``value``. 0, or -1 with the SQLite error set. */
static int
dsum_python_step(sqlite3_context *context, DsumAcc *acc, sqlite3_value *value)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    int ok = 0;
    if (acc->state != 2) {
        acc->python = PyObject_CallNoArgs((PyObject *)sq.user_data(context));
        if (acc->python != NULL && acc->state == 1) {
            PyObject *so_far = PyUnicode_FromStringAndSize(acc->text, acc->n);
            PyObject *r = so_far == NULL ? NULL : PyObject_CallMethod(acc->python, "step", "O", so_far);
            Py_XDECREF(so_far);
            if (r == NULL)
                Py_CLEAR(acc->python);
            Py_XDECREF(r);
        }
        acc->state = 2;
    }
    if (acc->python != NULL) {
        PyObject *arg = value_to_python(value);
        PyObject *r = arg == NULL ? NULL : PyObject_CallMethod(acc->python, "step", "O", arg);
        Py_XDECREF(arg);
        ok = r != NULL;
        Py_XDECREF(r);
    }
    if (!ok) {
        acc->failed = 1;
        sq.result_error(context, "user-defined aggregate's 'step' method raised error", -1);
    }
    PyErr_Clear();
    PyGILState_Release(gil);
    return ok ? 0 : -1;
}

static void
dsum_step(sqlite3_context *context, int argc, sqlite3_value **argv)
{
    DsumAcc *acc = sq.aggregate_context(context, (int)sizeof(DsumAcc));
    if (acc == NULL) {
        sq.result_error(context, "out of memory", -1);
        return;
    }
    if (acc->failed)
        return;
    if (acc->state == 2) {
        dsum_python_step(context, acc, argv[0]);
        return;
    }
    int type = sq.value_type(argv[0]);
    if (type == SQ_NULL)
        return; /* "no priced event": nothing to add */
    if (type == SQ_TEXT) {
        const unsigned char *y = sq.value_text(argv[0]);
        int yn = sq.value_bytes(argv[0]);
        Plain a, b;
        static const Plain zero = {0, "0", NULL, 1, 0};
        char out[2 * DADD_MAX + 8];
        int n;
        if (y != NULL && parse_plain(y, yn, &b) == 0
            && (acc->state == 0 || parse_plain((const unsigned char *)acc->text, acc->n, &a) == 0)
            && (n = add_plain(acc->state == 0 ? &zero : &a, &b, out)) >= 0) {
            memcpy(acc->text, out, (size_t)n + 1);
            acc->n = n;
            acc->state = 1;
            return;
        }
    }
    dsum_python_step(context, acc, argv[0]);
}

static void
dsum_final(sqlite3_context *context)
{
    DsumAcc *acc = sq.aggregate_context(context, 0);
    if (acc == NULL || acc->state == 0) { /* no row, or only NULLs: no priced event */
        sq.result_null(context);
        return;
    }
    if (acc->state == 1) {
        sq.result_text(context, acc->text, acc->n, SQ_TRANSIENT);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *result = NULL;
    if (!acc->failed && acc->python != NULL)
        result = PyObject_CallMethod(acc->python, "finalize", NULL);
    if (acc->failed)
        sq.result_error(context, "user-defined aggregate's 'step' method raised error", -1);
    else
        result_from_python(context, result, "user-defined aggregate's 'finalize' method raised error");
    Py_XDECREF(result);
    Py_CLEAR(acc->python);
    PyErr_Clear();
    PyGILState_Release(gil);
}

/* register_dsum(connection, aggregate): outlay_dsum on ``connection`` in C, ``aggregate`` (the
 * Python aggregate class: ``step(value)``, ``finalize()``) for the groups it hands over. */
static PyObject *
register_dsum(PyObject *Py_UNUSED(module), PyObject *args)
{
    return register_function(args, "outlay_dsum", 1, SQ_UTF8, NULL, dsum_step, dsum_final);
}

static PyMethodDef methods[] = {
    {"event_rows", (PyCFunction)(void (*)(void))event_rows, METH_FASTCALL,
     "event_rows(events, payloads, first, deltas, raw=False) -> rows: as outlay.ledger._sqlite.event_rows_py."},
    {"insert_rows", (PyCFunction)(void (*)(void))insert_rows, METH_FASTCALL,
     "insert_rows(connection, sql, rows) -> int: executemany(sql, rows) in C; the rows changed."},
    {"configure_sqlite", configure_sqlite, METH_VARARGS,
     "configure_sqlite(version, Connection, IntegrityError, OperationalError, DatabaseError, DataError,"
     " ProgrammingError, InternalError) -> bool"},
    {"register_dadd", register_dadd, METH_VARARGS,
     "register_dadd(connection, fallback): outlay_dadd in C on the connection, fallback for the rest"},
    {"register_dsum", register_dsum, METH_VARARGS,
     "register_dsum(connection, aggregate): outlay_dsum in C on the connection, aggregate for the rest"},
    {"in_transaction", in_transaction, METH_O, "in_transaction(connection) -> bool, read through its handle"},
    {"append_held", append_held, METH_VARARGS,
     "append_held(fd, data) -> int: os.write(fd, data) holding the GIL (a journal line: ~1 us)"},
    {"configure", configure, METH_VARARGS,
     "configure(time_us, day_of, encode_event, CostEvent, Usage, Acc, RunAcc, RollupDeltas.link, add,"
     " several_tenants)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "outlay.ledger._speedups",
    "The SQLite ledger's per-event row building and inserts, compiled (see event_rows_py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL)
        return NULL;
    PyObject *decimal = PyImport_ImportModule("decimal");
    if (decimal == NULL)
        return NULL;
    t_decimal = (PyTypeObject *)PyObject_GetAttrString(decimal, "Decimal");
    Py_DECREF(decimal);
    if (t_decimal == NULL)
        return NULL;
    if (!PyType_Check(t_decimal)) {
        PyErr_SetString(PyExc_TypeError, "decimal.Decimal is not a type");
        return NULL;
    }
    if ((zero = PyLong_FromLong(0)) == NULL || (one = PyLong_FromLong(1)) == NULL
        || (empty = PyUnicode_InternFromString("")) == NULL || (format_f = PyUnicode_InternFromString("f")) == NULL
        || (s_groups = PyUnicode_InternFromString("groups")) == NULL
        || (s_runs = PyUnicode_InternFromString("runs")) == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
