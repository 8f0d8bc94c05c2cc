/* The store's per-observation planning in C: the idempotency split, the new records' texts and
 * digests, and the fold of new observations into orders rows. Same inputs, outputs and results as
 * the Python it replaced (store/store.py calls it; tests/store compare it with plain rules); the
 * Python objects stay the interface, only the interpreter's per-item work goes. */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

/* Positions in an orders row, set once by configure() from store/store.py. */
enum {
    GID, CHANNEL, RAW, STATE, RANK, STATE_AT, CREATED, FIRST_SEEN, ROLES, DUPS, LAST, UPDATED,
    FACTS, KEYS, TAIL, PAID_AMOUNT, AMOUNT, CALLBACK, MANUAL, CHANNEL_SHIPPED, PROGRESS, N_INDEXES
};
static Py_ssize_t ix[N_INDEXES];
static Py_ssize_t width;
static PyObject *positions;  /* state -> milestone column */
static PyObject *dim_pos;    /* dimension -> column */
static PyObject *rank_of;    /* state -> rank */
static PyObject *shipped_or_later;  /* frozenset of states */
static PyObject *names;      /* records.JSON_NAMES: a name -> its JSON string (builds missing ones) */
static PyObject *json_string;  /* records.json_string */  /* both set by use_json() */
static PyObject *paid_str, *zero, *one, *hex_format, *by_time, *empty_args;
static long long other_role, channel_role, payment_role;
static PyObject *s_source, *s_state, *s_created_at, *s_dims, *s_notified_at, *s_manual_at,
    *s_amount_fen, *s_at, *s_channel, *s_raw_order_id, *s_record_key, *s_timestamp, *s_fullmatch, *comma;

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const unsigned char *p, Py_ssize_t n) {  /* zlib.crc32 */
    uint32_t c = 0xFFFFFFFFu;
    while (n-- > 0) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Days from 1970-01-01 to a proleptic Gregorian date. */
static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* store.schema.to_ms: int(moment.timestamp() * 1000), the same float steps for UTC datetimes;
 * other zones through timestamp() itself. Returns -1 with an error set on failure. */
static int to_ms(PyObject *moment, long long *out) {
    double seconds;
    if (PyDateTime_Check(moment) && PyDateTime_DATE_GET_TZINFO(moment) == PyDateTime_TimeZone_UTC) {
        long long days = days_from_civil(PyDateTime_GET_YEAR(moment), PyDateTime_GET_MONTH(moment),
                                         PyDateTime_GET_DAY(moment));
        long long us = ((days * 86400 + PyDateTime_DATE_GET_HOUR(moment) * 3600 +
                         PyDateTime_DATE_GET_MINUTE(moment) * 60 + PyDateTime_DATE_GET_SECOND(moment)) *
                            1000000LL +
                        PyDateTime_DATE_GET_MICROSECOND(moment));
        seconds = (double)us / 1e6;  /* timedelta.total_seconds(): microseconds / 10**6, rounded once */
    } else {
        PyObject *ts = PyObject_CallMethodNoArgs(moment, s_timestamp);
        if (ts == NULL) return -1;
        seconds = PyFloat_AsDouble(ts);
        Py_DECREF(ts);
        if (seconds == -1.0 && PyErr_Occurred()) return -1;
    }
    double ms = seconds * 1000.0;
    *out = (long long)ms;  /* int() truncates toward zero */
    return 0;
}

/* An int column of a row (list) or "none". */
static int get_ms(PyObject *value, long long *out) {
    if (value == Py_None) return 0;
    *out = PyLong_AsLongLong(value);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return 1;
}

/* Replace row[i] with a new reference (value stolen). `row` is a tuple this module just made and
 * nobody else holds yet, so it may still be filled in (as PyTuple_SET_ITEM does at creation). */
static int set_item(PyObject *row, Py_ssize_t i, PyObject *value) {
    if (value == NULL) return -1;
    PyObject *old = PyTuple_GET_ITEM(row, i);
    PyTuple_SET_ITEM(row, i, value);
    Py_XDECREF(old);
    return 0;
}

/* A new tuple holding the same values as `before` (an orders row), to change in place. */
static PyObject *copy_row(PyObject *before) {
    PyObject *row = PyTuple_New(width);
    if (row != NULL)
        for (Py_ssize_t i = 0; i < width; i++) PyTuple_SET_ITEM(row, i, Py_NewRef(PyTuple_GET_ITEM(before, i)));
    return row;
}

#define ROW(i) PyTuple_GET_ITEM(row, i)
#define BIT(i) (1ULL << (unsigned)(i))
#define PUT(i, value) set_item(row, i, Py_NewRef(value))

static int set_ms(PyObject *row, Py_ssize_t i, long long value) {
    return set_item(row, i, PyLong_FromLongLong(value));
}

static PyObject *configure(PyObject *self, PyObject *args) {
    PyObject *indexes, *roles;
    Py_ssize_t w;
    if (!PyArg_ParseTuple(args, "nO!O!O!O!O!O!", &w, &PyTuple_Type, &indexes, &PyDict_Type, &positions,
                          &PyDict_Type, &dim_pos, &PyDict_Type, &rank_of, &PyFrozenSet_Type,
                          &shipped_or_later, &PyTuple_Type, &roles))
        return NULL;
    if (PyTuple_GET_SIZE(indexes) != N_INDEXES || PyTuple_GET_SIZE(roles) != 3) {
        PyErr_SetString(PyExc_ValueError, "configure: wrong number of indexes or roles");
        return NULL;
    }
    width = w;
    for (int i = 0; i < N_INDEXES; i++) {
        ix[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(indexes, i));
        if (ix[i] < 0 || ix[i] >= width || ix[i] >= 64) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "configure: index out of range");
            return NULL;
        }
    }
    other_role = PyLong_AsLongLong(PyTuple_GET_ITEM(roles, 0));
    channel_role = PyLong_AsLongLong(PyTuple_GET_ITEM(roles, 1));
    payment_role = PyLong_AsLongLong(PyTuple_GET_ITEM(roles, 2));
    if (PyErr_Occurred()) return NULL;
    Py_INCREF(positions), Py_INCREF(dim_pos), Py_INCREF(rank_of), Py_INCREF(shipped_or_later);
    Py_RETURN_NONE;
}

/* use_json(names, json_string): how records' key texts spell names (a mapping that builds what it
 * lacks) and escaped strings; store/records.py sets them when imported. */
static PyObject *use_json(PyObject *self, PyObject *args) {
    PyObject *names_map, *escape;
    if (!PyArg_ParseTuple(args, "OO", &names_map, &escape)) return NULL;
    Py_XSETREF(names, Py_NewRef(names_map));
    Py_XSETREF(json_string, Py_NewRef(escape));
    Py_RETURN_NONE;
}

/* The progress reported for a row's current state (`progress`: state -> epoch ms) when newer than
 * entering the state and than the row's progress (replays and repeats change nothing): a new
 * reference, or NULL (with an error set on failure). */
static PyObject *newer_progress(PyObject *row, PyObject *progress) {
    PyObject *at = PyDict_GetItemWithError(progress, ROW(ix[STATE]));
    if (at == NULL) return NULL;
    int newer = PyObject_RichCompareBool(at, ROW(ix[STATE_AT]), Py_GT);
    PyObject *old = ROW(ix[PROGRESS]);
    if (newer > 0 && old != Py_None) newer = PyObject_RichCompareBool(at, old, Py_GT);
    return newer > 0 ? Py_NewRef(at) : NULL;
}

/* with_progress(row, progress) -> row: the orders row with the newer progress for its current state,
 * or the same row when there is none. */
static PyObject *with_progress(PyObject *self, PyObject *args) {
    PyObject *before, *progress;
    if (!PyArg_ParseTuple(args, "O!O!", &PyTuple_Type, &before, &PyDict_Type, &progress)) return NULL;
    if (PyTuple_GET_SIZE(before) != width) {
        PyErr_SetString(PyExc_ValueError, "with_progress: an orders row of the wrong width");
        return NULL;
    }
    PyObject *row = before;
    PyObject *at = newer_progress(row, progress);
    if (at == NULL) return PyErr_Occurred() ? NULL : Py_NewRef(before);
    if ((row = copy_row(before)) == NULL) {
        Py_DECREF(at);
        return NULL;
    }
    set_item(row, ix[PROGRESS], at);
    return row;
}

/* row[col] = value when it holds none or a later one (the earliest-time columns). */
static int keep_earliest(PyObject *row, Py_ssize_t col, long long value, unsigned long long *changed) {
    long long old;
    int had = get_ms(ROW(col), &old);
    if (had < 0) return -1;
    if (!had || value < old) {
        if (set_ms(row, col, value) < 0) return -1;
        *changed |= BIT(col);
    }
    return 0;
}

/* The epoch ms of an observation's optional time attribute: 1, 0 when it is None, -1 on error. */
static int attr_ms(PyObject *o, PyObject *name, long long *out) {
    PyObject *value = PyObject_GetAttr(o, name);
    if (value == NULL) return -1;
    int found = value == Py_None ? 0 : to_ms(value, out) < 0 ? -1 : 1;
    Py_DECREF(value);
    return found;
}

/* One touched order: `items` (a list of (at ms, observation)) folded into its row, in time order
 * (the latest dimension value wins). The rules: each state's milestone is its earliest time; the
 * state is the highest-ranked one seen, its state_at that state's milestone (a new state clears
 * the progress); created_at, manual_at and channel_shipped_at (a channel source's shipped-or-later
 * record) are the earliest seen; last_event_at the latest record or creation time; the callback
 * delay comes from the first paid record with a notification time; an amount fills amount_fen
 * (paid_amount_fen from a payment source) once; seen_roles collects the sources' role bits,
 * duplicate_records adds the batch's repeats; facts, record_keys (digests appended), records_tail
 * (this plan's record_log seq), updated_at = now, and the progress reported for the current state
 * (newer_progress). Returns the row (a new tuple) and sets *changed, or NULL on error. */
static PyObject *fold_one(PyObject *gid, PyObject *items, PyObject *before, PyObject *bits,
                          PyObject *repeats, PyObject *text_codes, PyObject *progress, long long now_ms,
                          PyObject *role_bits, PyObject *plan_texts, PyObject *plan_seqs,
                          long long *next_seq, unsigned long long *changed_out) {
    PyObject *row = NULL, *best = NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (before == Py_None) {
        PyObject *first = PyTuple_GET_ITEM(PyList_GET_ITEM(items, 0), 1);
        row = PyTuple_New(width);
        if (row == NULL) return NULL;
        for (Py_ssize_t i = 0; i < width; i++) PyTuple_SET_ITEM(row, i, Py_NewRef(Py_None));
        Py_INCREF(gid);
        if (set_item(row, ix[GID], gid) < 0 ||
            set_item(row, ix[CHANNEL], PyObject_GetAttr(first, s_channel)) < 0 ||
            set_item(row, ix[RAW], PyObject_GetAttr(first, s_raw_order_id)) < 0 ||
            set_ms(row, ix[FIRST_SEEN], now_ms) < 0)
            goto error;
        PUT(ix[ROLES], zero);
        PUT(ix[DUPS], zero);
    } else {
        if (!PyTuple_Check(before) || PyTuple_GET_SIZE(before) != width) {
            PyErr_SetString(PyExc_ValueError, "fold: an orders row that is not a tuple of its width");
            return NULL;
        }
        if ((row = copy_row(before)) == NULL) return NULL;
        best = ROW(ix[STATE]);
        Py_INCREF(best);
        if (best == Py_None) Py_CLEAR(best);
    }
    if (n > 32) {  /* stable by time: the latest dimension value wins */
        PyObject *sort = PyObject_GetAttrString(items, "sort"), *kwargs = Py_BuildValue("{sO}", "key", by_time);
        PyObject *done = sort && kwargs ? PyObject_Call(sort, empty_args, kwargs) : NULL;
        Py_XDECREF(sort), Py_XDECREF(kwargs);
        if (done == NULL) goto error;
        Py_DECREF(done);
    } else if (n > 1) {  /* the same, by insertion: few items */
        for (Py_ssize_t i = 1; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            long long at = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 0));
            Py_ssize_t j = i;
            while (j > 0 && PyLong_AsLongLong(PyTuple_GET_ITEM(PyList_GET_ITEM(items, j - 1), 0)) > at) {
                PyList_SET_ITEM(items, j, PyList_GET_ITEM(items, j - 1));
                j--;
            }
            PyList_SET_ITEM(items, j, item);
        }
        if (PyErr_Occurred()) goto error;
    }
    unsigned long long changed = BIT(ix[KEYS]) | BIT(ix[TAIL]) | BIT(ix[UPDATED]);
    PyObject *repeat = PyDict_GetItemWithError(repeats, gid);
    if (repeat == NULL && PyErr_Occurred()) goto error;
    if (repeat != NULL) {
        PyObject *sum = PyNumber_Add(ROW(ix[DUPS]), repeat);
        if (set_item(row, ix[DUPS], sum) < 0) goto error;
        changed |= BIT(ix[DUPS]);
    }
    long long last = 0, roles = 0;
    int has_last = get_ms(ROW(ix[LAST]), &last);
    if (has_last < 0 || get_ms(ROW(ix[ROLES]), &roles) < 0) goto error;
    int roles_changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        PyObject *o = PyTuple_GET_ITEM(item, 1), *value;
        long long at = PyLong_AsLongLong(PyTuple_GET_ITEM(item, 0));
        if (at == -1 && PyErr_Occurred()) goto error;
        PyObject *source = PyObject_GetAttr(o, s_source);
        if (source == NULL) goto error;
        PyObject *role_obj = PyDict_GetItemWithError(role_bits, source);
        Py_DECREF(source);
        long long role = other_role;
        if (role_obj != NULL) role = PyLong_AsLongLong(role_obj);
        if (PyErr_Occurred()) goto error;
        if (!(roles & role)) {
            roles |= role;
            roles_changed = 1;
            changed |= BIT(ix[ROLES]);
        }
        PyObject *state = PyObject_GetAttr(o, s_state);  /* held until the item's end */
        if (state == NULL) goto error;
        PyObject *col_obj = PyDict_GetItemWithError(positions, state);
        if (col_obj == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, state);
            goto item_error;
        }
        if (keep_earliest(row, PyLong_AsSsize_t(col_obj), at, &changed) < 0) goto item_error;
        if (!has_last || at > last) last = at, has_last = 1;
        long long created;
        int has_created = attr_ms(o, s_created_at, &created);
        if (has_created < 0 || (has_created && keep_earliest(row, ix[CREATED], created, &changed) < 0))
            goto item_error;
        if (has_created && created > last) last = created;
        if ((value = PyObject_GetAttr(o, s_dims)) == NULL) goto item_error;
        int truth = PyObject_IsTrue(value);
        if (truth > 0 && PyDict_Check(value)) {
            PyObject *dim, *dim_value;
            Py_ssize_t pos = 0;
            while (truth > 0 && PyDict_Next(value, &pos, &dim, &dim_value)) {
                int t = PyObject_IsTrue(dim_value);
                if (t <= 0) {
                    truth = t < 0 ? -1 : truth;
                    continue;
                }
                PyObject *p_obj = PyDict_GetItemWithError(dim_pos, dim);
                if (p_obj == NULL) {
                    truth = PyErr_Occurred() ? -1 : truth;
                    continue;
                }
                Py_ssize_t p = PyLong_AsSsize_t(p_obj);
                int ne = PyObject_RichCompareBool(ROW(p), dim_value, Py_NE);
                if (ne < 0) truth = -1;
                if (ne > 0) {
                    Py_INCREF(dim_value);
                    set_item(row, p, dim_value);
                    changed |= BIT(p);
                }
            }
        } else if (truth > 0) {
            PyErr_SetString(PyExc_TypeError, "fold: an observation's dims is not a dict");
            truth = -1;
        }
        Py_DECREF(value);
        if (truth < 0) goto item_error;
        int is_paid = PyUnicode_Compare(state, paid_str) == 0;
        if (is_paid && ROW(ix[CALLBACK]) == Py_None) {
            long long notified;
            int has = attr_ms(o, s_notified_at, &notified);
            if (has < 0 || (has && set_ms(row, ix[CALLBACK], notified - at) < 0)) goto item_error;
            if (has) changed |= BIT(ix[CALLBACK]);
        }
        long long manual;
        int has_manual = attr_ms(o, s_manual_at, &manual);
        if (has_manual < 0 || (has_manual && keep_earliest(row, ix[MANUAL], manual, &changed) < 0))
            goto item_error;
        if (role == channel_role) {
            int later = PySet_Contains(shipped_or_later, state);
            if (later < 0 || (later && keep_earliest(row, ix[CHANNEL_SHIPPED], at, &changed) < 0)) goto item_error;
        }
        if ((value = PyObject_GetAttr(o, s_amount_fen)) == NULL) goto item_error;
        if (value != Py_None) {
            Py_ssize_t at_pos = role == payment_role ? ix[PAID_AMOUNT] : ix[AMOUNT];
            if (ROW(at_pos) == Py_None) {
                Py_INCREF(value);
                set_item(row, at_pos, value);
                changed |= BIT(at_pos);
            }
        }
        Py_DECREF(value);
        if (best == NULL) {
            Py_INCREF(state);
            best = state;
        } else {
            PyObject *r_new = PyDict_GetItemWithError(rank_of, state);
            PyObject *r_best = r_new ? PyDict_GetItemWithError(rank_of, best) : NULL;
            if (r_new == NULL || r_best == NULL) {
                if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, r_new ? best : state);
                goto item_error;
            }
            if (PyLong_AsLongLong(r_new) > PyLong_AsLongLong(r_best)) {
                Py_INCREF(state);
                Py_SETREF(best, state);
            }
        }
        Py_DECREF(state);
        continue;
    item_error:
        Py_DECREF(state);
        goto error;
    }
    if (roles_changed && set_ms(row, ix[ROLES], roles) < 0) goto error;
    {
        long long old;
        int had = get_ms(ROW(ix[LAST]), &old);
        if (had < 0) goto error;
        if (has_last && (!had || old != last)) {
            if (set_ms(row, ix[LAST], last) < 0) goto error;
            changed |= BIT(ix[LAST]);
        }
    }
    int ne = PyObject_RichCompareBool(best, ROW(ix[STATE]), Py_NE);
    if (ne < 0) goto error;
    if (ne) {
        PyObject *r = PyDict_GetItemWithError(rank_of, best);
        if (r == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, best);
            goto error;
        }
        Py_INCREF(Py_None);
        set_item(row, ix[PROGRESS], Py_None);  /* the progress was the old state's */
        Py_INCREF(best), Py_INCREF(r);
        set_item(row, ix[STATE], best);
        set_item(row, ix[RANK], r);
        changed |= BIT(ix[PROGRESS]) | BIT(ix[STATE]) | BIT(ix[RANK]);
    }
    {
        PyObject *col_obj = PyDict_GetItemWithError(positions, best);
        if (col_obj == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, best);
            goto error;
        }
        PyObject *state_at = ROW(PyLong_AsSsize_t(col_obj));
        ne = PyObject_RichCompareBool(ROW(ix[STATE_AT]), state_at, Py_NE);
        if (ne < 0) goto error;
        if (ne) {
            Py_INCREF(state_at);
            set_item(row, ix[STATE_AT], state_at);
            changed |= BIT(ix[STATE_AT]);
        }
    }
    {
        PyObject *facts = PyObject_Format(bits, hex_format);
        if (facts == NULL) goto error;
        ne = PyObject_RichCompareBool(ROW(ix[FACTS]), facts, Py_NE);
        if (ne < 0) {
            Py_DECREF(facts);
            goto error;
        }
        if (ne) {
            set_item(row, ix[FACTS], facts);
            changed |= BIT(ix[FACTS]);
        } else
            Py_DECREF(facts);
    }
    {
        PyObject *text = PyTuple_GET_ITEM(text_codes, 0), *codes = PyTuple_GET_ITEM(text_codes, 1);
        PyObject *keys = ROW(ix[KEYS]);
        int has_keys = PyObject_IsTrue(keys);
        if (has_keys < 0) goto error;
        if (has_keys) {
            if (set_item(row, ix[KEYS], PyNumber_Add(keys, codes)) < 0) goto error;
        } else {
            Py_INCREF(codes);
            set_item(row, ix[KEYS], codes);
        }
        PyObject *seq = PyDict_GetItemWithError(plan_seqs, gid);  /* this plan's record_log row */
        if (seq == NULL) {
            if (PyErr_Occurred()) goto error;
            seq = PyLong_FromLongLong((*next_seq)++);
            if (seq == NULL || PyDict_SetItem(plan_seqs, gid, seq) < 0) {
                Py_XDECREF(seq);
                goto error;
            }
        } else
            Py_INCREF(seq);
        set_item(row, ix[TAIL], seq);
        PyObject *planned = PyDict_GetItemWithError(plan_texts, gid);
        if (planned == NULL) {
            if (PyErr_Occurred()) goto error;
            PyObject *list = PyList_New(1);
            if (list == NULL) goto error;
            Py_INCREF(text);
            PyList_SET_ITEM(list, 0, text);
            int bad = PyDict_SetItem(plan_texts, gid, list) < 0;
            Py_DECREF(list);
            if (bad) goto error;
        } else if (PyList_Append(planned, text) < 0)
            goto error;
    }
    if (set_ms(row, ix[UPDATED], now_ms) < 0) goto error;  /* a touched order always changes */
    if (progress != NULL) {
        PyObject *at = newer_progress(row, progress);
        if (at == NULL && PyErr_Occurred()) goto error;
        if (at != NULL) {
            set_item(row, ix[PROGRESS], at);
            changed |= BIT(ix[PROGRESS]);
        }
    }
    Py_XDECREF(best);
    *changed_out = changed;
    return row;
error:
    Py_XDECREF(best);
    Py_XDECREF(row);
    return NULL;
}

/* fold(touched, entries, repeats, texts, progress, now_ms, role_bits, pending, before_txn, dirty,
 *      plan_texts, plan_seqs, next_seq) -> next_seq: Store._fold's loop over touched orders. */
static PyObject *fold(PyObject *self, PyObject *args) {
    PyObject *touched, *entries, *repeats, *texts, *progress, *role_bits, *pending, *before_txn, *dirty,
        *plan_texts, *plan_seqs;
    long long now_ms, next_seq;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!LO!O!O!O!O!O!L", &PyDict_Type, &touched, &PyDict_Type, &entries,
                          &PyDict_Type, &repeats, &PyDict_Type, &texts, &PyDict_Type, &progress, &now_ms,
                          &PyDict_Type, &role_bits, &PyDict_Type, &pending, &PyDict_Type, &before_txn,
                          &PyDict_Type, &dirty, &PyDict_Type, &plan_texts, &PyDict_Type, &plan_seqs,
                          &next_seq))
        return NULL;
    PyObject *gid, *items;
    Py_ssize_t pos = 0;
    while (PyDict_Next(touched, &pos, &gid, &items)) {
        PyObject *entry = PyDict_GetItemWithError(entries, gid);
        PyObject *text_codes = PyDict_GetItemWithError(texts, gid);
        if (entry == NULL || text_codes == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, gid);
            return NULL;
        }
        if (!PyList_Check(items) || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 ||
            !PyTuple_Check(text_codes) || PyTuple_GET_SIZE(text_codes) != 2) {
            PyErr_SetString(PyExc_TypeError, "fold: unexpected shapes");
            return NULL;
        }
        PyObject *before = PyTuple_GET_ITEM(entry, 0), *bits = PyTuple_GET_ITEM(entry, 1);
        int had = PyDict_Contains(before_txn, gid);
        if (had < 0 || (!had && PyDict_SetItem(before_txn, gid, before) < 0)) return NULL;
        PyObject *news = PyDict_GetItemWithError(progress, gid);
        if (news == NULL && PyErr_Occurred()) return NULL;
        unsigned long long changed = 0;
        PyObject *row = fold_one(gid, items, before, bits, repeats, text_codes, news, now_ms, role_bits,
                                 plan_texts, plan_seqs, &next_seq, &changed);
        if (row == NULL) return NULL;
        PyObject *new_entry = PyTuple_Pack(2, row, bits);
        Py_DECREF(row);
        if (new_entry == NULL) return NULL;
        int bad = PyDict_SetItem(pending, gid, new_entry) < 0;
        Py_DECREF(new_entry);
        if (bad) return NULL;
        PyObject *mask = PyLong_FromUnsignedLongLong(changed), *old = PyDict_GetItemWithError(dirty, gid);
        if (mask == NULL) return NULL;
        if (old != NULL) Py_SETREF(mask, PyNumber_Or(old, mask));
        else if (PyErr_Occurred()) Py_CLEAR(mask);
        if (mask == NULL) return NULL;
        bad = PyDict_SetItem(dirty, gid, mask) < 0;
        Py_DECREF(mask);
        if (bad) return NULL;
    }
    return PyLong_FromLongLong(next_seq);
}

/* records.json_string: `"value"` when JSON writes it as it is, else through json.dumps. */
static PyObject *json_text(PyObject *value) {
    if (!PyUnicode_Check(value)) return PyObject_CallOneArg(json_string, value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    int kind = PyUnicode_KIND(value);
    const void *data = PyUnicode_DATA(value);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x20 || c == '"' || c == '\\') return PyObject_CallOneArg(json_string, value);
    }
    return PyUnicode_FromFormat("\"%U\"", value);
}

/* records.key_of(source, record_key): `["source","key",` */
static PyObject *key_of(PyObject *source, PyObject *record_key) {
    if (names == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "key_of: store.records has not set the JSON names (use_json)");
        return NULL;
    }
    PyObject *name = PyObject_GetItem(names, source);
    if (name == NULL) return NULL;
    PyObject *key = json_text(record_key);
    if (key == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *head = PyUnicode_FromFormat("[%U,%U,", name, key);
    Py_DECREF(name);
    Py_DECREF(key);
    return head;
}

static PyObject *digest_override;  /* set_digest(): a test's digest function instead of CRC-32 */

static PyObject *digest_of(PyObject *head) {  /* records.digest */
    if (digest_override != NULL) {
        PyObject *code = PyObject_CallOneArg(digest_override, head);
        if (code != NULL && !PyBytes_Check(code)) {
            Py_DECREF(code);
            PyErr_SetString(PyExc_TypeError, "set_digest: the digest function must return bytes");
            return NULL;
        }
        return code;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(head, &n);
    if (utf8 == NULL) return NULL;
    uint32_t c = crc32_of((const unsigned char *)utf8, n);
    unsigned char out[4] = {c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, (c >> 24) & 0xFF};
    return PyBytes_FromStringAndSize((const char *)out, 4);
}

static PyObject *py_key_of(PyObject *self, PyObject *args) {
    PyObject *source, *record_key;
    if (!PyArg_ParseTuple(args, "UU", &source, &record_key)) return NULL;
    return key_of(source, record_key);
}

static PyObject *py_digest(PyObject *self, PyObject *head) {
    if (!PyUnicode_Check(head)) {
        PyErr_SetString(PyExc_TypeError, "digest: a str");
        return NULL;
    }
    return digest_of(head);
}

/* by_key(observations, ids) -> {(global id, source, record key): the first observation}. */
static PyObject *by_key(PyObject *self, PyObject *args) {
    PyObject *obs, *ids;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &obs, &PyDict_Type, &ids)) return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(obs); i++) {
        PyObject *o = PyList_GET_ITEM(obs, i);
        PyObject *channel = PyObject_GetAttr(o, s_channel);
        PyObject *raw = channel ? PyObject_GetAttr(o, s_raw_order_id) : NULL;
        PyObject *pair = raw ? PyTuple_Pack(2, channel, raw) : NULL;
        Py_XDECREF(channel);
        Py_XDECREF(raw);
        if (pair == NULL) goto error;
        PyObject *gid = PyDict_GetItemWithError(ids, pair);
        if (gid == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, pair);
            Py_DECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
        PyObject *source = PyObject_GetAttr(o, s_source);
        PyObject *record_key = source ? PyObject_GetAttr(o, s_record_key) : NULL;
        PyObject *key = record_key ? PyTuple_Pack(3, gid, source, record_key) : NULL;
        Py_XDECREF(source);
        Py_XDECREF(record_key);
        if (key == NULL) goto error;
        PyObject *had = PyDict_SetDefault(out, key, o);
        Py_DECREF(key);
        if (had == NULL) goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* split(by_key, entries) -> (new, suspects): each (gid, source, observation, key_of text, digest,
 * entry or None); a suspect's digest is among its order's record_keys (most are repeats). */
static PyObject *split(PyObject *self, PyObject *args) {
    PyObject *keyed, *entries;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &keyed, &PyDict_Type, &entries)) return NULL;
    PyObject *fresh = PyList_New(0), *suspects = PyList_New(0);
    if (fresh == NULL || suspects == NULL) goto error;
    PyObject *key, *o;
    Py_ssize_t pos = 0;
    while (PyDict_Next(keyed, &pos, &key, &o)) {
        PyObject *gid = PyTuple_GET_ITEM(key, 0), *source = PyTuple_GET_ITEM(key, 1);
        PyObject *entry = PyDict_GetItemWithError(entries, gid);
        if (entry == NULL && PyErr_Occurred()) goto error;
        PyObject *head = key_of(source, PyTuple_GET_ITEM(key, 2));
        if (head == NULL) goto error;
        PyObject *code = digest_of(head);
        if (code == NULL) {
            Py_DECREF(head);
            goto error;
        }
        PyObject *target = fresh;
        if (entry != NULL && PyTuple_Check(entry) && PyTuple_GET_SIZE(entry) == 2 &&
            PyTuple_GET_ITEM(entry, 0) != Py_None) {
            PyObject *keys = PyTuple_GET_ITEM(PyTuple_GET_ITEM(entry, 0), ix[KEYS]);
            int found = PyBytes_Check(keys)
                            ? memmem(PyBytes_AS_STRING(keys), PyBytes_GET_SIZE(keys), PyBytes_AS_STRING(code), 4) != NULL
                            : PySequence_Contains(keys, code);  /* as `code in keys` would */
            if (found < 0) {
                Py_DECREF(head), Py_DECREF(code);
                goto error;
            }
            if (found) target = suspects;
        }
        PyObject *item = PyTuple_Pack(6, gid, source, o, head, code, entry ? entry : Py_None);
        Py_DECREF(head);
        Py_DECREF(code);
        if (item == NULL) goto error;
        int bad = PyList_Append(target, item) < 0;
        Py_DECREF(item);
        if (bad) goto error;
    }
    PyObject *result = PyTuple_Pack(2, fresh, suspects);
    Py_DECREF(fresh);
    Py_DECREF(suspects);
    return result;
error:
    Py_XDECREF(fresh);
    Py_XDECREF(suspects);
    return NULL;
}

/* b"".join(a list of bytes) */
static PyObject *join_bytes(PyObject *list) {
    Py_ssize_t size = 0, n = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < n; i++) size += PyBytes_GET_SIZE(PyList_GET_ITEM(list, i));
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) return NULL;
    char *at = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(list, i);
        memcpy(at, PyBytes_AS_STRING(part), PyBytes_GET_SIZE(part));
        at += PyBytes_GET_SIZE(part);
    }
    return out;
}

/* gather(new, entries, now_ms, fact_bits, fact_bit) -> (touched, repeats, texts): the new records
 * per order as (at ms, observation), how many repeat a fact their source had delivered, and per
 * order (records text, digests); entries get each order's delivered bits. */
static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *fresh, *entries, *fact_bits, *fact_bit;
    long long now_ms;
    if (!PyArg_ParseTuple(args, "O!O!LO!O", &PyList_Type, &fresh, &PyDict_Type, &entries, &now_ms,
                          &PyDict_Type, &fact_bits, &fact_bit))
        return NULL;
    PyObject *touched = PyDict_New(), *repeats = PyDict_New(), *texts = PyDict_New(),
             *codes = PyDict_New(), *delivered = PyDict_New(), *result = NULL;
    if (!touched || !repeats || !texts || !codes || !delivered) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fresh); i++) {
        PyObject *item = PyList_GET_ITEM(fresh, i);
        PyObject *gid = PyTuple_GET_ITEM(item, 0), *source = PyTuple_GET_ITEM(item, 1);
        PyObject *o = PyTuple_GET_ITEM(item, 2), *head = PyTuple_GET_ITEM(item, 3);
        PyObject *code = PyTuple_GET_ITEM(item, 4), *entry = PyTuple_GET_ITEM(item, 5);
        PyObject *moment = PyObject_GetAttr(o, s_at);
        if (moment == NULL) goto done;
        long long at;
        int bad = to_ms(moment, &at) < 0;
        Py_DECREF(moment);
        if (bad) goto done;
        PyObject *state = PyObject_GetAttr(o, s_state);
        if (state == NULL) goto done;
        PyObject *state_name = PyObject_GetItem(names, state);
        if (state_name == NULL) {
            Py_DECREF(state);
            goto done;
        }
        PyObject *text = PyUnicode_FromFormat("%U%U,%lld,%lld]", head, state_name, at, now_ms);
        Py_DECREF(state_name);
        PyObject *at_obj = text ? PyLong_FromLongLong(at) : NULL;
        PyObject *pair = at_obj ? PyTuple_Pack(2, at_obj, o) : NULL;
        Py_XDECREF(at_obj);
        if (pair == NULL) {
            Py_XDECREF(text);
            Py_DECREF(state);
            goto done;
        }
        PyObject *items = PyDict_GetItemWithError(touched, gid);
        if (items == NULL) {
            PyObject *l1 = PyList_New(1), *l2 = PyList_New(1), *l3 = PyList_New(1);
            if (l1 && l2 && l3) {
                Py_INCREF(pair), Py_INCREF(text), Py_INCREF(code);
                PyList_SET_ITEM(l1, 0, pair);
                PyList_SET_ITEM(l2, 0, text);
                PyList_SET_ITEM(l3, 0, code);
                bad = PyErr_Occurred() || PyDict_SetItem(touched, gid, l1) < 0 ||
                      PyDict_SetItem(texts, gid, l2) < 0 || PyDict_SetItem(codes, gid, l3) < 0;
            } else
                bad = 1;
            Py_XDECREF(l1), Py_XDECREF(l2), Py_XDECREF(l3);
        } else {
            bad = PyList_Append(items, pair) < 0 || PyList_Append(PyDict_GetItem(texts, gid), text) < 0 ||
                  PyList_Append(PyDict_GetItem(codes, gid), code) < 0;
        }
        Py_DECREF(pair);
        Py_DECREF(text);
        if (bad) {
            Py_DECREF(state);
            goto done;
        }
        PyObject *bits = PyDict_GetItemWithError(delivered, gid);  /* borrowed */
        if (bits == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(state);
                goto done;
            }
            bits = entry != Py_None ? PyTuple_GET_ITEM(entry, 1) : zero;
        }
        PyObject *fact = PyTuple_Pack(2, source, state);
        Py_DECREF(state);
        if (fact == NULL) goto done;
        PyObject *bit = PyDict_GetItemWithError(fact_bits, fact);
        if (bit != NULL) Py_INCREF(bit);
        else if (!PyErr_Occurred()) bit = PyObject_CallObject(fact_bit, fact);
        Py_DECREF(fact);
        if (bit == NULL) goto done;
        PyObject *both = PyNumber_And(bits, bit);
        int truth = both ? PyObject_IsTrue(both) : -1;
        Py_XDECREF(both);
        if (truth > 0) {
            PyObject *count = PyDict_GetItemWithError(repeats, gid);
            PyObject *more = count ? PyNumber_Add(count, one) : (PyErr_Occurred() ? NULL : Py_NewRef(one));
            truth = more == NULL || PyDict_SetItem(repeats, gid, more) < 0 ? -1 : 0;
            Py_XDECREF(more);
        }
        PyObject *merged = truth < 0 ? NULL : PyNumber_Or(bits, bit);
        Py_DECREF(bit);
        if (merged == NULL) goto done;
        bad = PyDict_SetItem(delivered, gid, merged) < 0;
        Py_DECREF(merged);
        if (bad) goto done;
    }
    {
        PyObject *gid, *bits;
        Py_ssize_t pos = 0;
        while (PyDict_Next(delivered, &pos, &gid, &bits)) {
            PyObject *entry = PyDict_GetItemWithError(entries, gid);
            if (entry == NULL && PyErr_Occurred()) goto done;
            PyObject *updated = PyTuple_Pack(2, entry ? PyTuple_GET_ITEM(entry, 0) : Py_None, bits);
            if (updated == NULL) goto done;
            int bad = PyDict_SetItem(entries, gid, updated) < 0;
            Py_DECREF(updated);
            if (bad) goto done;
        }
        PyObject *list;
        pos = 0;
        while (PyDict_Next(texts, &pos, &gid, &list)) {
            PyObject *joined = PyUnicode_Join(comma, list);
            PyObject *code_list = PyDict_GetItem(codes, gid);
            PyObject *digests = joined ? join_bytes(code_list) : NULL;
            PyObject *pair = digests ? PyTuple_Pack(2, joined, digests) : NULL;
            Py_XDECREF(joined);
            Py_XDECREF(digests);
            /* replacing the value of an existing key during PyDict_Next is allowed */
            int bad = pair == NULL || PyDict_SetItem(texts, gid, pair) < 0;
            Py_XDECREF(pair);
            if (bad) goto done;
        }
    }
    result = PyTuple_Pack(3, touched, repeats, texts);
done:
    Py_XDECREF(touched), Py_XDECREF(repeats), Py_XDECREF(texts), Py_XDECREF(codes), Py_XDECREF(delivered);
    return result;
}

static PyObject *set_digest(PyObject *self, PyObject *fn) {
    Py_XSETREF(digest_override, fn == Py_None ? NULL : Py_NewRef(fn));
    Py_RETURN_NONE;
}


/* plan_rows(before_txn, pending, dirty, plan_texts, base_texts, written, append_records, positions_of,
 *           state_count_bits) -> (inserts, updates, logged, changes, moved): Store._plan_orders's
 * pass over the transaction's changed orders: new rows, updated rows grouped by their changed
 * positions, record_log rows (seq, gid, previous seq, text), (before, after) changes, and the
 * changes that may move an order between the open-state counts. */
static PyObject *plan_rows(PyObject *self, PyObject *args) {
    PyObject *before_txn, *pending, *dirty, *plan_texts, *base_texts, *written, *append_records,
        *positions_of;
    unsigned long long state_count_bits;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OOK", &PyDict_Type, &before_txn, &PyDict_Type, &pending,
                          &PyDict_Type, &dirty, &PyDict_Type, &plan_texts, &PyDict_Type, &base_texts,
                          &PyDict_Type, &written, &append_records, &positions_of, &state_count_bits))
        return NULL;
    PyObject *inserts = PyList_New(0), *updates = PyDict_New(), *logged = PyList_New(0),
             *changes = PyList_New(0), *moved = PyList_New(0), *masks = PyDict_New(), *result = NULL;
    if (!inserts || !updates || !logged || !changes || !moved || !masks) goto done;
    PyObject *gid, *before;
    Py_ssize_t pos = 0;
    while (PyDict_Next(before_txn, &pos, &gid, &before)) {
        PyObject *entry = PyDict_GetItemWithError(pending, gid), *mask_obj = PyDict_GetItemWithError(dirty, gid);
        if (entry == NULL || mask_obj == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, gid);
            goto done;
        }
        PyObject *after = PyTuple_GET_ITEM(entry, 0);
        unsigned long long mask = PyLong_AsUnsignedLongLong(mask_obj);
        if (mask == (unsigned long long)-1 && PyErr_Occurred()) goto done;
        if (mask & BIT(ix[KEYS])) {  /* new records: a record_log row (an older version's list first) */
            PyObject *planned = PyDict_GetItemWithError(plan_texts, gid);
            if (planned == NULL) {
                if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, gid);
                goto done;
            }
            PyObject *joined = PyUnicode_Join(comma, planned), *text;
            if (joined == NULL) goto done;
            PyObject *base = PyDict_GetItemWithError(base_texts, gid);
            if (base != NULL) text = PyObject_CallFunctionObjArgs(append_records, base, joined, NULL);
            else text = PyErr_Occurred() ? NULL : PyUnicode_FromFormat("[%U]", joined);
            Py_DECREF(joined);
            if (text == NULL) goto done;
            PyObject *log = PyTuple_Pack(4, PyTuple_GET_ITEM(after, ix[TAIL]), gid,
                                         before == Py_None ? Py_None : PyTuple_GET_ITEM(before, ix[TAIL]), text);
            int bad = log == NULL || PyDict_SetItem(written, gid, text) < 0 || PyList_Append(logged, log) < 0;
            Py_DECREF(text);
            Py_XDECREF(log);
            if (bad) goto done;
        }
        PyObject *change = PyTuple_Pack(2, before, after);
        if (change == NULL) goto done;
        int bad;
        if (before == Py_None) {
            bad = PyList_Append(inserts, after) < 0 || PyList_Append(changes, change) < 0 ||
                  PyList_Append(moved, change) < 0;
        } else {
            PyObject *rows = PyDict_GetItemWithError(masks, mask_obj);  /* this call's rows per mask */
            if (rows == NULL && !PyErr_Occurred()) {
                PyObject *changed = PyObject_CallOneArg(positions_of, mask_obj);
                rows = changed ? PyDict_GetItemWithError(updates, changed) : NULL;
                if (rows == NULL && changed != NULL && !PyErr_Occurred()) {
                    PyObject *list = PyList_New(0);
                    if (list != NULL && PyDict_SetItem(updates, changed, list) == 0) rows = list;
                    Py_XDECREF(list);  /* updates holds it */
                }
                if (rows != NULL && PyDict_SetItem(masks, mask_obj, rows) < 0) rows = NULL;
                Py_XDECREF(changed);
            }
            bad = rows == NULL || PyList_Append(rows, after) < 0 || PyList_Append(changes, change) < 0 ||
                  ((mask & state_count_bits) && PyList_Append(moved, change) < 0);
        }
        Py_DECREF(change);
        if (bad) goto done;
    }
    result = PyTuple_Pack(5, inserts, updates, logged, changes, moved);
done:
    Py_XDECREF(inserts), Py_XDECREF(updates), Py_XDECREF(logged), Py_XDECREF(changes), Py_XDECREF(moved);
    Py_XDECREF(masks);
    return result;
}

/* state_moves(changes, dimension positions, open states) -> {(state, dimension values): net orders
 * in}: each change's move between the open-state counts (Store._count_states's first pass). */
static PyObject *state_moves(PyObject *self, PyObject *args) {
    PyObject *changes, *dims, *opened;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyList_Type, &changes, &PyTuple_Type, &dims, &PyFrozenSet_Type,
                          &opened))
        return NULL;
    Py_ssize_t n_dims = PyTuple_GET_SIZE(dims);
    Py_ssize_t at[16];
    if (n_dims > 16) {
        PyErr_SetString(PyExc_ValueError, "state_moves: too many dimensions");
        return NULL;
    }
    for (Py_ssize_t d = 0; d < n_dims; d++)
        if ((at[d] = PyLong_AsSsize_t(PyTuple_GET_ITEM(dims, d))) < 0) return NULL;
    PyObject *moves = PyDict_New();
    if (moves == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(changes); i++) {
        PyObject *change = PyList_GET_ITEM(changes, i);
        PyObject *old = PyTuple_GET_ITEM(change, 0), *new = PyTuple_GET_ITEM(change, 1);
        PyObject *state = PyTuple_GET_ITEM(new, ix[STATE]);
        PyObject *keys[2] = {NULL, NULL};
        int steps[2] = {-1, 1}, is_open;
        if (old != Py_None) {
            PyObject *was = PyTuple_GET_ITEM(old, ix[STATE]);
            if ((is_open = PySet_Contains(opened, was)) < 0) goto error;
            if (is_open) {
                int same = PyObject_RichCompareBool(state, was, Py_EQ);
                for (Py_ssize_t d = 0; same > 0 && d < n_dims; d++)
                    same = PyObject_RichCompareBool(PyTuple_GET_ITEM(old, at[d]), PyTuple_GET_ITEM(new, at[d]), Py_EQ);
                if (same < 0) goto error;
                if (same) continue;  /* same state, same dimension values: the counts stand */
                keys[0] = old;
            }
        }
        if ((is_open = PySet_Contains(opened, state)) < 0) goto error;
        if (is_open) keys[1] = new;
        for (int k = 0; k < 2; k++) {
            if (keys[k] == NULL) continue;
            PyObject *values = PyTuple_New(n_dims);
            if (values == NULL) goto error;
            for (Py_ssize_t d = 0; d < n_dims; d++)
                PyTuple_SET_ITEM(values, d, Py_NewRef(PyTuple_GET_ITEM(keys[k], at[d])));
            PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(keys[k], ix[STATE]), values);
            Py_DECREF(values);
            if (key == NULL) goto error;
            PyObject *count = PyDict_GetItemWithError(moves, key);
            long long n = count ? PyLong_AsLongLong(count) : 0;
            PyObject *sum = PyErr_Occurred() ? NULL : PyLong_FromLongLong(n + steps[k]);
            int bad = sum == NULL || PyDict_SetItem(moves, key, sum) < 0;
            Py_XDECREF(sum);
            Py_DECREF(key);
            if (bad) goto error;
        }
    }
    return moves;
error:
    Py_DECREF(moves);
    return NULL;
}


/* identify(observations, channels, rank, patterns) -> (valid, wanted, rejected): the observations
 * of a known channel and canonical state whose raw ID matches its channel's pattern, the first
 * valid one of each (channel, raw id), and the positions of the others (Store._validate_identity
 * writes their reasons). A (channel, raw id) already wanted passed its pattern: not matched again. */
static PyObject *identify(PyObject *self, PyObject *args) {
    PyObject *seq, *channels, *rank, *patterns;
    if (!PyArg_ParseTuple(args, "OOO!O!", &seq, &channels, &PyDict_Type, &rank, &PyDict_Type, &patterns))
        return NULL;
    PyObject *obs = PySequence_Fast(seq, "identify: observations must be a sequence");
    if (obs == NULL) return NULL;
    PyObject *valid = PyList_New(0), *wanted = PyDict_New(), *rejected = PyList_New(0), *result = NULL;
    if (!valid || !wanted || !rejected) goto done;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(obs); i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(obs, i);
        PyObject *channel = PyObject_GetAttr(o, s_channel);
        PyObject *raw = channel ? PyObject_GetAttr(o, s_raw_order_id) : NULL;
        PyObject *state = raw ? PyObject_GetAttr(o, s_state) : NULL;
        PyObject *key = state ? PyTuple_Pack(2, channel, raw) : NULL;
        int ok = key == NULL ? -1 : PyDict_Contains(wanted, key);
        if (ok == 0) {
            ok = PySequence_Contains(channels, channel);
            PyObject *pattern = ok > 0 ? PyDict_GetItemWithError(patterns, channel) : NULL;
            if (pattern != NULL) {
                PyObject *match = PyObject_CallMethodOneArg(pattern, s_fullmatch, raw);
                ok = match == NULL ? -1 : match != Py_None;
                Py_XDECREF(match);
            } else if (PyErr_Occurred())
                ok = -1;
        }
        if (ok > 0) ok = PyDict_Contains(rank, state);
        if (ok > 0) {
            if (PyList_Append(valid, o) < 0 || PyDict_SetDefault(wanted, key, o) == NULL) ok = -1;
        } else if (ok == 0) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(rejected, at) < 0) ok = -1;
            Py_XDECREF(at);
        }
        Py_XDECREF(channel), Py_XDECREF(raw), Py_XDECREF(state), Py_XDECREF(key);
        if (ok < 0) goto done;
    }
    result = PyTuple_Pack(3, valid, wanted, rejected);
done:
    Py_DECREF(obs);
    Py_XDECREF(valid), Py_XDECREF(wanted), Py_XDECREF(rejected);
    return result;
}


/* forget(inflight, committed): drop from `inflight` each key `committed` maps to the same object
 * (what a later plan put there since stays). */
static PyObject *forget(PyObject *self, PyObject *args) {
    PyObject *inflight, *committed, *key, *value;
    if (!PyArg_ParseTuple(args, "O!O!", &PyDict_Type, &inflight, &PyDict_Type, &committed)) return NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(committed, &pos, &key, &value)) {
        PyObject *held = PyDict_GetItemWithError(inflight, key);
        if (held == NULL && PyErr_Occurred()) return NULL;
        if (held == value && PyDict_DelItem(inflight, key) < 0) return NULL;
    }
    Py_RETURN_NONE;
}


/* -- packed cache entries ------------------------------------------------------------------------
 * A committed order's (row, bits) kept in the store's order cache as one bytes object (~210 bytes
 * against ~1-1.5 KB of Python objects), so several times as many moving orders fit in the same memory.
 * Layout: the bits (a value as below), then 0 (no row) or 1, the row's width and each value: None,
 * a zigzag varint integer, a pooled string's number (low-cardinality
 * columns: one shared object per value), a UTF-8 string, bytes, or an integer beyond 64 bits as
 * decimal text. A row holding any other type is not packed (pack_entries leaves it out). */
enum { P_NONE, P_INT, P_POOLED, P_STR, P_BYTES, P_BIGINT };
#define POOLED_MAX_LEN 64
static uint64_t pooled_columns;   /* bit per row position whose strings are pooled */
static Py_ssize_t pool_limit;     /* at most this many pooled strings; later ones are spelled out */
static PyObject *pool_list, *pool_index;  /* number -> string, string -> number */

typedef struct { unsigned char *data; Py_ssize_t len, cap; } Buf;

static int buf_grow(Buf *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    unsigned char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) { PyErr_NoMemory(); return -1; }
    b->data = data, b->cap = cap;
    return 0;
}

static int put_varint(Buf *b, uint64_t v) {
    if (buf_grow(b, 10) < 0) return -1;
    while (v >= 0x80) { b->data[b->len++] = (unsigned char)(v | 0x80); v >>= 7; }
    b->data[b->len++] = (unsigned char)v;
    return 0;
}

static int put_bytes(Buf *b, int tag, const char *data, Py_ssize_t n) {
    if (buf_grow(b, 1) < 0) return -1;
    b->data[b->len++] = (unsigned char)tag;
    if (put_varint(b, (uint64_t)n) < 0 || buf_grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

static int put_decimal(Buf *b, int tag, PyObject *value) {  /* an int spelled out in decimal */
    PyObject *text = PyObject_Str(value);
    if (text == NULL) return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    int rc = utf8 == NULL ? -1 : put_bytes(b, tag, utf8, n);
    Py_DECREF(text);
    return rc;
}

/* 1 packed, 0 a value of another type (not packed), -1 error */
static int put_value(Buf *b, PyObject *value, Py_ssize_t column) {  /* column -1: not a row's */
    if (value == Py_None) {
        if (buf_grow(b, 1) < 0) return -1;
        b->data[b->len++] = P_NONE;
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (v == -1 && PyErr_Occurred()) return -1;
        if (overflow) return put_decimal(b, P_BIGINT, value) < 0 ? -1 : 1;
        if (buf_grow(b, 1) < 0) return -1;
        b->data[b->len++] = P_INT;
        return put_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)) < 0 ? -1 : 1;
    }
    if (PyUnicode_CheckExact(value)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
        if (utf8 == NULL) {  /* a lone surrogate has no UTF-8: such a row is not packed */
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
            PyErr_Clear();
            return 0;
        }
        if (column >= 0 && column < 64 && (pooled_columns >> column & 1) && n <= POOLED_MAX_LEN && pool_index != NULL) {
            PyObject *number = PyDict_GetItemWithError(pool_index, value);
            if (number == NULL && PyErr_Occurred()) return -1;
            if (number == NULL && PyList_GET_SIZE(pool_list) < pool_limit) {
                if ((number = PyLong_FromSsize_t(PyList_GET_SIZE(pool_list))) == NULL) return -1;
                int bad = PyList_Append(pool_list, value) < 0 || PyDict_SetItem(pool_index, value, number) < 0;
                Py_DECREF(number);  /* the dict holds it */
                if (bad) return -1;
            }
            if (number != NULL) {
                if (buf_grow(b, 1) < 0) return -1;
                b->data[b->len++] = P_POOLED;
                return put_varint(b, (uint64_t)PyLong_AsSsize_t(number)) < 0 ? -1 : 1;
            }
        }
        return put_bytes(b, P_STR, utf8, n) < 0 ? -1 : 1;
    }
    if (PyBytes_CheckExact(value))
        return put_bytes(b, P_BYTES, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value)) < 0 ? -1 : 1;
    return 0;
}

/* The packed form of (row, bits), or Py_None when the row holds a value of another type. */
static PyObject *pack_entry(PyObject *entry) {
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2)
        return PyErr_Format(PyExc_TypeError, "an order cache entry must be (row, bits)");
    PyObject *row = PyTuple_GET_ITEM(entry, 0), *bits = PyTuple_GET_ITEM(entry, 1);
    if (!PyLong_CheckExact(bits) || (row != Py_None && !PyTuple_Check(row)))
        return PyErr_Format(PyExc_TypeError, "an order cache entry must be (tuple or None, int)");
    Buf b = {NULL, 0, 0};
    PyObject *out = NULL;
    int ok = put_value(&b, bits, -1);  /* an int: always packed */
    if (ok < 0 || buf_grow(&b, 1) < 0) goto done;
    b.data[b.len++] = row != Py_None;
    if (row != Py_None) {
        Py_ssize_t n = PyTuple_GET_SIZE(row);
        if (put_varint(&b, (uint64_t)n) < 0) goto done;
        for (Py_ssize_t i = 0; ok && i < n; i++) {
            ok = put_value(&b, PyTuple_GET_ITEM(row, i), i);
            if (ok < 0) goto done;
        }
    }
    if (!ok) {
        out = Py_None;
        Py_INCREF(out);
    } else {
        out = PyBytes_FromStringAndSize((const char *)b.data, b.len);
    }
done:
    PyMem_Free(b.data);
    return out;
}

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    uint64_t out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) break;
        unsigned char c = *(*p)++;
        out |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) { *v = out; return 0; }
    }
    PyErr_SetString(PyExc_ValueError, "a packed order entry is cut short");
    return -1;
}

static int get_span(const unsigned char **p, const unsigned char *end, const char **data, Py_ssize_t *n) {
    uint64_t len;
    if (get_varint(p, end, &len) < 0) return -1;
    if (len > (uint64_t)(end - *p)) {
        PyErr_SetString(PyExc_ValueError, "a packed order entry is cut short");
        return -1;
    }
    *data = (const char *)*p, *n = (Py_ssize_t)len;
    *p += len;
    return 0;
}

static PyObject *long_from_decimal(const char *data, Py_ssize_t n) {
    char *text = PyMem_Malloc(n + 1);
    if (text == NULL) return PyErr_NoMemory();
    memcpy(text, data, n);
    text[n] = 0;
    PyObject *out = PyLong_FromString(text, NULL, 10);
    PyMem_Free(text);
    return out;
}

static PyObject *get_value(const unsigned char **p, const unsigned char *end) {
    if (*p >= end) {
        PyErr_SetString(PyExc_ValueError, "a packed order entry is cut short");
        return NULL;
    }
    int tag = *(*p)++;
    uint64_t v;
    const char *data;
    Py_ssize_t n;
    switch (tag) {
    case P_NONE:
        Py_RETURN_NONE;
    case P_INT:
        if (get_varint(p, end, &v) < 0) return NULL;
        return PyLong_FromLongLong((long long)(v >> 1) ^ -(long long)(v & 1));
    case P_POOLED:
        if (get_varint(p, end, &v) < 0) return NULL;
        if (pool_list == NULL || v >= (uint64_t)PyList_GET_SIZE(pool_list)) break;
        PyObject *pooled = PyList_GET_ITEM(pool_list, (Py_ssize_t)v);
        Py_INCREF(pooled);
        return pooled;
    case P_STR:
        if (get_span(p, end, &data, &n) < 0) return NULL;
        return PyUnicode_DecodeUTF8(data, n, "strict");
    case P_BYTES:
        if (get_span(p, end, &data, &n) < 0) return NULL;
        return PyBytes_FromStringAndSize(data, n);
    case P_BIGINT:
        if (get_span(p, end, &data, &n) < 0) return NULL;
        return long_from_decimal(data, n);
    }
    PyErr_Format(PyExc_ValueError, "a packed order entry holds an unknown value (tag %d)", tag);
    return NULL;
}

/* (row, bits) from the packed form. */
static PyObject *unpack_entry(PyObject *packed) {
    if (!PyBytes_Check(packed)) return PyErr_Format(PyExc_TypeError, "a packed order entry must be bytes");
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packed), *end = p + PyBytes_GET_SIZE(packed);
    PyObject *bits = get_value(&p, end), *row = NULL, *out = NULL;
    uint64_t v;
    if (bits == NULL) goto done;
    if (!PyLong_CheckExact(bits)) {
        PyErr_SetString(PyExc_ValueError, "a packed order entry's bits are not an integer");
        goto done;
    }
    if (p >= end) goto short_entry;
    if (*p++ == 0) {
        row = Py_None;
        Py_INCREF(row);
    } else {
        if (get_varint(&p, end, &v) < 0) goto done;
        if (v > (uint64_t)(end - p)) goto short_entry;  /* at least a byte per value */
        if ((row = PyTuple_New((Py_ssize_t)v)) == NULL) goto done;
        for (Py_ssize_t i = 0; i < (Py_ssize_t)v; i++) {
            PyObject *value = get_value(&p, end);
            if (value == NULL) goto done;
            PyTuple_SET_ITEM(row, i, value);
        }
    }
    if (p != end) {
        PyErr_SetString(PyExc_ValueError, "a packed order entry has bytes left over");
        goto done;
    }
    out = PyTuple_Pack(2, row, bits);
    goto done;
short_entry:
    PyErr_SetString(PyExc_ValueError, "a packed order entry is cut short");
done:
    Py_XDECREF(bits), Py_XDECREF(row);
    return out;
}

/* pack_setup(pooled_positions, pool_limit): which row positions hold low-cardinality strings. */
static PyObject *pack_setup(PyObject *self, PyObject *args) {
    PyObject *pooled;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "O!n", &PyTuple_Type, &pooled, &limit)) return NULL;
    uint64_t mask = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pooled); i++) {
        Py_ssize_t at = PyLong_AsSsize_t(PyTuple_GET_ITEM(pooled, i));
        if (at < 0 || at >= 64) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "pack_setup: position out of range");
            return NULL;
        }
        mask |= (uint64_t)1 << at;
    }
    if (pool_list == NULL && ((pool_list = PyList_New(0)) == NULL || (pool_index = PyDict_New()) == NULL))
        return NULL;
    pooled_columns = mask, pool_limit = limit;
    Py_RETURN_NONE;
}

/* pack_entries(entries) -> {key: packed}: each (row, bits) packed; entries whose row holds a value
 * of another type are left out (read back when next needed). */
static PyObject *pack_entries(PyObject *self, PyObject *entries) {
    if (!PyDict_Check(entries)) return PyErr_Format(PyExc_TypeError, "pack_entries takes a dict");
    PyObject *out = PyDict_New(), *key, *entry;
    Py_ssize_t pos = 0;
    if (out == NULL) return NULL;
    while (PyDict_Next(entries, &pos, &key, &entry)) {
        PyObject *packed = pack_entry(entry);
        if (packed == NULL) { Py_DECREF(out); return NULL; }
        int bad = packed != Py_None && PyDict_SetItem(out, key, packed) < 0;
        Py_DECREF(packed);
        if (bad) { Py_DECREF(out); return NULL; }
    }
    return out;
}

static PyObject *py_unpack_entry(PyObject *self, PyObject *packed) { return unpack_entry(packed); }

static PyObject *py_pack_entry(PyObject *self, PyObject *entry) { return pack_entry(entry); }


/* The value of `key` in the first of `maps` (dicts) that has it, a new reference; NULL: none has it
 * (or an error, which is set). */
static PyObject *first_held(PyObject *maps, PyObject *key) {
    PyObject *value = NULL;
    for (Py_ssize_t m = 0; value == NULL && m < PyTuple_GET_SIZE(maps); m++) {
        value = PyDict_GetItemWithError(PyTuple_GET_ITEM(maps, m), key);
        if (value == NULL && PyErr_Occurred()) return NULL;
        Py_XINCREF(value);
    }
    return value;
}

/* A lookup's outcome: key -> value into `found`, or key onto `missing` when value is NULL (unless an
 * error is set). Takes both references. 0, or -1 on an error. */
static int sort_out(PyObject *found, PyObject *missing, PyObject *key, PyObject *value) {
    int bad = PyErr_Occurred() != NULL;
    if (!bad) bad = value != NULL ? PyDict_SetItem(found, key, value) < 0 : PyList_Append(missing, key) < 0;
    Py_XDECREF(value);
    Py_DECREF(key);
    return bad ? -1 : 0;
}

/* look_up(keys, maps, recent) -> (found, missing): each key's value from the first of `maps` (dicts)
 * that has it, else from `recent` (store._Recent of packed entries, handed out unpacked: its young
 * generation, or its old one, whose hit moves to the young one, which turns old once it holds
 * `half`), as Store's lookups did one by one. */
static PyObject *look_up(PyObject *self, PyObject *args) {
    PyObject *keys, *maps, *recent;
    if (!PyArg_ParseTuple(args, "OO!O", &keys, &PyTuple_Type, &maps, &recent)) return NULL;
    PyObject *young = PyObject_GetAttrString(recent, "young"), *old = PyObject_GetAttrString(recent, "old");
    PyObject *half_obj = PyObject_GetAttrString(recent, "half"), *iter = PyObject_GetIter(keys);
    PyObject *found = PyDict_New(), *missing = PyList_New(0), *result = NULL, *key;
    Py_ssize_t half = half_obj ? PyLong_AsSsize_t(half_obj) : -1;
    if (!young || !old || !PyDict_Check(young) || !PyDict_Check(old) || half < 0 || !iter || !found || !missing) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "look_up: recent must hold young and old dicts");
        goto done;
    }
    while ((key = PyIter_Next(iter)) != NULL) {
        PyObject *value = first_held(maps, key);
        int from_recent = value == NULL;
        if (value == NULL && !PyErr_Occurred()) {
            value = PyDict_GetItemWithError(young, key);
            Py_XINCREF(value);
        }
        if (value == NULL && !PyErr_Occurred()) {
            value = PyDict_GetItemWithError(old, key);
            if (value != NULL) {
                Py_INCREF(value);
                if (PyDict_DelItem(old, key) < 0) Py_CLEAR(value);  /* the error is seen below */
                if (value != NULL && PyDict_SetItem(young, key, value) == 0 && PyDict_GET_SIZE(young) >= half) {
                    PyObject *fresh = PyDict_New();  /* the young generation turns old */
                    if (fresh != NULL && PyObject_SetAttrString(recent, "old", young) == 0 &&
                        PyObject_SetAttrString(recent, "young", fresh) == 0) {
                        Py_SETREF(old, young);
                        young = fresh;
                        fresh = NULL;
                    }
                    Py_XDECREF(fresh);
                }
            }
        }
        if (value != NULL && from_recent) Py_SETREF(value, unpack_entry(value));
        if (sort_out(found, missing, key, value) < 0) goto done;
    }
    if (!PyErr_Occurred()) result = PyTuple_Pack(2, found, missing);
done:
    Py_XDECREF(young), Py_XDECREF(old), Py_XDECREF(half_obj), Py_XDECREF(iter);
    Py_XDECREF(found), Py_XDECREF(missing);
    return result;
}

/* param_chunks(rows, columns, max_params) -> [[values], ...]: the rows' values at `columns` (a tuple
 * of positions; None: every column of rows as wide as the first) laid end to end, as few lists as
 * hold at most max_params values each and whole rows only: a multi-row statement's parameters,
 * without a tuple per row or a Python loop over the values (the writer binds them holding the GIL). */
static PyObject *param_chunks(PyObject *self, PyObject *args) {
    PyObject *rows, *columns;
    Py_ssize_t max_params;
    if (!PyArg_ParseTuple(args, "O!On", &PyList_Type, &rows, &columns, &max_params)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), take;
    if (n == 0) return PyList_New(0);
    Py_ssize_t *at = NULL;
    if (columns == Py_None) {
        PyObject *first = PyList_GET_ITEM(rows, 0);
        if (!PyTuple_Check(first)) return PyErr_Format(PyExc_TypeError, "rows must be tuples");
        take = PyTuple_GET_SIZE(first);
    } else {
        if (!PyTuple_Check(columns)) return PyErr_Format(PyExc_TypeError, "columns must be a tuple or None");
        take = PyTuple_GET_SIZE(columns);
        if ((at = PyMem_New(Py_ssize_t, take ? take : 1)) == NULL) return PyErr_NoMemory();
        for (Py_ssize_t c = 0; c < take; c++) {
            at[c] = PyLong_AsSsize_t(PyTuple_GET_ITEM(columns, c));
            if (at[c] == -1 && PyErr_Occurred()) { PyMem_Free(at); return NULL; }
        }
    }
    if (take == 0) { PyMem_Free(at); return PyErr_Format(PyExc_ValueError, "rows of no values"); }
    Py_ssize_t per = max_params / take > 0 ? max_params / take : 1;
    PyObject *out = PyList_New(0), *chunk = NULL;
    if (out == NULL) goto fail;
    for (Py_ssize_t start = 0; start < n; start += per) {
        Py_ssize_t end = start + per < n ? start + per : n, k = 0;
        if ((chunk = PyList_New((end - start) * take)) == NULL) goto fail;
        for (Py_ssize_t i = start; i < end; i++) {
            PyObject *row = PyList_GET_ITEM(rows, i);
            if (!PyTuple_Check(row)) { PyErr_Format(PyExc_TypeError, "row %zd is not a tuple", i); goto fail; }
            Py_ssize_t size = PyTuple_GET_SIZE(row);
            if (at == NULL && size != take) {
                PyErr_Format(PyExc_ValueError, "row %zd has %zd values, not %zd", i, size, take);
                goto fail;
            }
            for (Py_ssize_t c = 0; c < take; c++) {
                Py_ssize_t p = at ? at[c] : c;
                if (p < 0 || p >= size) {
                    PyErr_Format(PyExc_IndexError, "row %zd has no position %zd", i, p);
                    goto fail;
                }
                PyObject *value = PyTuple_GET_ITEM(row, p);
                Py_INCREF(value);
                PyList_SET_ITEM(chunk, k++, value);
            }
        }
        if (PyList_Append(out, chunk) < 0) goto fail;
        Py_CLEAR(chunk);
    }
    PyMem_Free(at);
    return out;
fail:
    PyMem_Free(at);
    Py_XDECREF(chunk);
    Py_XDECREF(out);
    return NULL;
}

/* -- the ID cache -----------------------------------------------------------------------------------
 * (channel, raw id) -> global id of orders committed lately, in two generations like store._Recent
 * (a hit in the old one moves to the young one; when the young one holds `half` it turns old and the
 * old one goes), kept as bytes in C: ~80 bytes an entry against ~250 as Python objects. A committed
 * ID never changes, so updating a key already held keeps it. */
typedef struct { uint64_t hash; uint32_t off; uint16_t key_len; uint16_t gid_len; } IdSlot;  /* off 0: empty */
typedef struct { IdSlot *slots; size_t cap, count; char *arena; size_t used, size; } IdGen;
typedef struct { PyObject_HEAD IdGen young, old; size_t half; } IdCache;

static uint64_t hash_bytes(const char *p, size_t n) {  /* FNV-1a, then a final mix */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdull, h ^= h >> 33;
    return h;
}

static void gen_free(IdGen *g) {
    PyMem_Free(g->slots), PyMem_Free(g->arena);
    memset(g, 0, sizeof *g);
}

static Py_ssize_t gen_find(IdGen *g, uint64_t hash, const char *key, size_t key_len) {
    if (g->cap == 0) return -1;
    for (size_t i = hash & (g->cap - 1);; i = (i + 1) & (g->cap - 1)) {
        IdSlot *s = &g->slots[i];
        if (s->off == 0) return -1;
        if (s->hash == hash && s->key_len == key_len && memcmp(g->arena + s->off, key, key_len) == 0)
            return (Py_ssize_t)i;
    }
}

static int gen_grow(IdGen *g) {
    size_t cap = g->cap ? g->cap * 2 : 1024;
    IdSlot *slots = PyMem_Calloc(cap, sizeof(IdSlot));
    if (slots == NULL) { PyErr_NoMemory(); return -1; }
    for (size_t j = 0; j < g->cap; j++) {
        IdSlot *s = &g->slots[j];
        if (s->off == 0) continue;
        size_t i = s->hash & (cap - 1);
        while (slots[i].off != 0) i = (i + 1) & (cap - 1);
        slots[i] = *s;
    }
    PyMem_Free(g->slots);
    g->slots = slots, g->cap = cap;
    return 0;
}

/* Add key -> gid unless the key is held. 0 added or held, -1 error. */
static int gen_put(IdGen *g, uint64_t hash, const char *key, size_t key_len, const char *gid, size_t gid_len) {
    if (gen_find(g, hash, key, key_len) >= 0) return 0;
    if (key_len > 0xFFFF || gid_len > 0xFFFF) { PyErr_SetString(PyExc_ValueError, "ID too long to cache"); return -1; }
    if ((g->count + 1) * 2 > g->cap && gen_grow(g) < 0) return -1;
    size_t need = key_len + gid_len;
    if (g->used == 0) g->used = 1;  /* offset 0 marks an empty slot */
    if (g->used + need > UINT32_MAX) { PyErr_SetString(PyExc_MemoryError, "ID cache arena full"); return -1; }
    if (g->used + need > g->size) {
        size_t size = g->size ? g->size : 65536;
        while (size < g->used + need) size *= 2;
        char *arena = PyMem_Realloc(g->arena, size);
        if (arena == NULL) { PyErr_NoMemory(); return -1; }
        g->arena = arena, g->size = size;
    }
    memcpy(g->arena + g->used, key, key_len);
    memcpy(g->arena + g->used + key_len, gid, gid_len);
    size_t i = hash & (g->cap - 1);
    while (g->slots[i].off != 0) i = (i + 1) & (g->cap - 1);
    g->slots[i] = (IdSlot){hash, (uint32_t)g->used, (uint16_t)key_len, (uint16_t)gid_len};
    g->used += need, g->count++;
    return 0;
}

static void id_turn(IdCache *c) {  /* the young generation turns old */
    gen_free(&c->old);
    c->old = c->young;
    memset(&c->young, 0, sizeof c->young);
}

/* The key bytes of (channel, raw id): channel, NUL, raw id (UTF-8). 0 ok, 1 not such a key, -1 error. */
static int id_key(PyObject *pair, char **buf, size_t *cap, size_t *len) {
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) return 1;
    PyObject *a = PyTuple_GET_ITEM(pair, 0), *b = PyTuple_GET_ITEM(pair, 1);
    if (!PyUnicode_Check(a) || !PyUnicode_Check(b)) return 1;
    Py_ssize_t na, nb;
    const char *sa = PyUnicode_AsUTF8AndSize(a, &na), *sb;
    if (sa == NULL || (sb = PyUnicode_AsUTF8AndSize(b, &nb)) == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
        PyErr_Clear();
        return 1;
    }
    size_t n = (size_t)na + 1 + (size_t)nb;
    if (n > *cap) {
        char *grown = PyMem_Realloc(*buf, n);
        if (grown == NULL) { PyErr_NoMemory(); return -1; }
        *buf = grown, *cap = n;
    }
    memcpy(*buf, sa, na), (*buf)[na] = 0, memcpy(*buf + na + 1, sb, nb);
    *len = n;
    return 0;
}

/* The gid of a key, promoting an old hit as _Recent.get does; NULL without error: not held. */
static PyObject *id_get(IdCache *c, const char *key, size_t key_len) {
    uint64_t hash = hash_bytes(key, key_len);
    Py_ssize_t i = gen_find(&c->young, hash, key, key_len);
    if (i >= 0) {
        IdSlot *s = &c->young.slots[i];
        return PyUnicode_DecodeUTF8(c->young.arena + s->off + s->key_len, s->gid_len, "strict");
    }
    if ((i = gen_find(&c->old, hash, key, key_len)) < 0) return NULL;
    IdSlot *s = &c->old.slots[i];
    PyObject *gid = PyUnicode_DecodeUTF8(c->old.arena + s->off + s->key_len, s->gid_len, "strict");
    if (gid == NULL) return NULL;
    /* moves to the young one (the old copy is dropped with its generation) */
    if (gen_put(&c->young, hash, key, key_len, c->old.arena + s->off + s->key_len, s->gid_len) < 0) {
        Py_DECREF(gid);
        return NULL;
    }
    if (c->young.count >= c->half) id_turn(c);
    return gid;
}

static PyObject *id_cache_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "n", &size)) return NULL;
    IdCache *c = (IdCache *)type->tp_alloc(type, 0);
    if (c == NULL) return NULL;
    c->half = size / 2 > 0 ? (size_t)(size / 2) : 1;
    return (PyObject *)c;
}

static void id_cache_dealloc(IdCache *c) {
    gen_free(&c->young), gen_free(&c->old);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* update({(channel, raw id): gid}): all of them into the young generation, which turns old after. */
static PyObject *id_cache_update(IdCache *c, PyObject *items) {
    if (!PyDict_Check(items)) return PyErr_Format(PyExc_TypeError, "IdCache.update takes a dict");
    PyObject *key, *gid;
    Py_ssize_t pos = 0;
    char *buf = NULL;
    size_t cap = 0, len;
    while (PyDict_Next(items, &pos, &key, &gid)) {
        int rc = id_key(key, &buf, &cap, &len);
        if (rc < 0) goto fail;
        if (rc == 1 || !PyUnicode_Check(gid)) continue;  /* not such an entry: not cached */
        Py_ssize_t gid_len;
        const char *gid_utf8 = PyUnicode_AsUTF8AndSize(gid, &gid_len);
        if (gid_utf8 == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) goto fail;
            PyErr_Clear();
            continue;
        }
        if (gen_put(&c->young, hash_bytes(buf, len), buf, len, gid_utf8, (size_t)gid_len) < 0) goto fail;
    }
    PyMem_Free(buf);
    if (c->young.count >= c->half) id_turn(c);
    Py_RETURN_NONE;
fail:
    PyMem_Free(buf);
    return NULL;
}

static PyObject *gen_dict(IdGen *g) {
    PyObject *out = PyDict_New();
    for (size_t i = 0; out != NULL && i < g->cap; i++) {
        IdSlot *s = &g->slots[i];
        if (s->off == 0) continue;
        const char *k = g->arena + s->off, *nul = memchr(k, 0, s->key_len);
        PyObject *key = nul ? Py_BuildValue("(s#s#)", k, (Py_ssize_t)(nul - k), nul + 1,
                                            (Py_ssize_t)(s->key_len - (nul - k) - 1)) : NULL;
        PyObject *gid = key ? PyUnicode_DecodeUTF8(k + s->key_len, s->gid_len, "strict") : NULL;
        if (gid == NULL || PyDict_SetItem(out, key, gid) < 0) Py_CLEAR(out);
        Py_XDECREF(key), Py_XDECREF(gid);
    }
    return out;
}

/* generations() -> (young, old) as dicts: for tests. */
static PyObject *id_cache_generations(IdCache *c, PyObject *unused) {
    PyObject *young = gen_dict(&c->young), *old = young ? gen_dict(&c->old) : NULL;
    PyObject *out = old ? PyTuple_Pack(2, young, old) : NULL;
    Py_XDECREF(young), Py_XDECREF(old);
    return out;
}

static Py_ssize_t id_cache_len(IdCache *c) { return (Py_ssize_t)(c->young.count + c->old.count); }

static PyMethodDef id_cache_methods[] = {
    {"update", (PyCFunction)id_cache_update, METH_O, "Add {(channel, raw id): global id} (held keys stay)."},
    {"generations", (PyCFunction)id_cache_generations, METH_NOARGS, "(young, old) as dicts (tests)."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods id_cache_sequence = {.sq_length = (lenfunc)id_cache_len};

static PyTypeObject IdCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "store._planner.IdCache",
    .tp_doc = "(channel, raw id) -> global id of orders committed lately, two generations, packed.",
    .tp_basicsize = sizeof(IdCache),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = id_cache_new,
    .tp_dealloc = (destructor)id_cache_dealloc,
    .tp_methods = id_cache_methods,
    .tp_as_sequence = &id_cache_sequence,
};

/* look_up_ids(keys, maps, cache) -> (found, missing): each (channel, raw id) from the first of `maps`
 * that has it, else from the IdCache (promoting old hits), as look_up does with a _Recent. */
static PyObject *look_up_ids(PyObject *self, PyObject *args) {
    PyObject *keys, *maps, *cache_obj;
    if (!PyArg_ParseTuple(args, "OO!O!", &keys, &PyTuple_Type, &maps, &IdCacheType, &cache_obj)) return NULL;
    IdCache *cache = (IdCache *)cache_obj;
    PyObject *iter = PyObject_GetIter(keys), *found = PyDict_New(), *missing = PyList_New(0), *result = NULL, *key;
    char *buf = NULL;
    size_t cap = 0, len;
    if (!iter || !found || !missing) goto done;
    while ((key = PyIter_Next(iter)) != NULL) {
        PyObject *value = first_held(maps, key);
        if (value == NULL && !PyErr_Occurred() && id_key(key, &buf, &cap, &len) == 0)
            value = id_get(cache, buf, len);
        if (sort_out(found, missing, key, value) < 0) goto done;
    }
    if (!PyErr_Occurred()) result = PyTuple_Pack(2, found, missing);
done:
    PyMem_Free(buf);
    Py_XDECREF(iter), Py_XDECREF(found), Py_XDECREF(missing);
    return result;
}

static PyObject *py_to_ms(PyObject *self, PyObject *moment) {
    long long ms;
    if (to_ms(moment, &ms) < 0) return NULL;
    return PyLong_FromLongLong(ms);
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, "Set the orders row's positions and the lifecycle's maps."},
    {"fold", fold, METH_VARARGS, "Fold touched orders' new observations into their rows."},
    {"by_key", by_key, METH_VARARGS, "A batch's observations by (global id, source, record key)."},
    {"split", split, METH_VARARGS, "New records and suspected repeats (digest among the order's)."},
    {"gather", gather, METH_VARARGS, "New records per order: items, repeats, texts and digests."},
    {"key_of", py_key_of, METH_VARARGS, "records.key_of"},
    {"digest", py_digest, METH_O, "records.digest"},
    {"plan_rows", plan_rows, METH_VARARGS, "The transaction's changed orders as statements' rows and changes."},
    {"state_moves", state_moves, METH_VARARGS, "Changes' moves between the open-state counts."},
    {"with_progress", with_progress, METH_VARARGS, "An orders row with the newer progress for its state."},
    {"use_json", use_json, METH_VARARGS, "Set how key texts spell names and escaped strings (store.records)."},
    {"identify", identify, METH_VARARGS, "Valid observations, the first of each order, the rest's positions."},
    {"forget", forget, METH_VARARGS, "Drop the entries a committed plan wrote from the in-flight map."},
    {"look_up", look_up, METH_VARARGS, "Entries from the first map that has each key, else unpacked from a store._Recent."},
    {"param_chunks", param_chunks, METH_VARARGS, "Rows' values at given positions as flat lists of at most N values."},
    {"pack_setup", pack_setup, METH_VARARGS, "The row positions whose strings packed entries pool, and the pool's bound."},
    {"pack_entries", pack_entries, METH_O, "Order cache entries (row, bits) packed as bytes (others left out)."},
    {"pack_entry", py_pack_entry, METH_O, "One (row, bits) packed as bytes (None: a value of another type)."},
    {"unpack_entry", py_unpack_entry, METH_O, "(row, bits) from its packed form."},
    {"look_up_ids", look_up_ids, METH_VARARGS, "Global IDs from the first map that has each key, else from an IdCache."},
    {"to_ms", py_to_ms, METH_O, "schema.to_ms"},
    {"set_digest", set_digest, METH_O, "Tests: digest record keys with this function (None: CRC-32)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "store._planner", NULL, -1, methods};

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__planner(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    crc_init();
    INTERN(s_source, "source");
    INTERN(s_state, "state");
    INTERN(s_created_at, "created_at");
    INTERN(s_dims, "dims");
    INTERN(s_notified_at, "notified_at");
    INTERN(s_manual_at, "manual_at");
    INTERN(s_amount_fen, "amount_fen");
    INTERN(s_at, "at");
    INTERN(s_channel, "channel");
    INTERN(s_raw_order_id, "raw_order_id");
    INTERN(s_record_key, "record_key");
    INTERN(s_timestamp, "timestamp");
    INTERN(s_fullmatch, "fullmatch");
    INTERN(comma, ",");
    INTERN(paid_str, "paid");
    INTERN(hex_format, "x");
    if ((zero = PyLong_FromLong(0)) == NULL || (one = PyLong_FromLong(1)) == NULL) return NULL;
    if ((empty_args = PyTuple_New(0)) == NULL) return NULL;
    PyObject *operator = PyImport_ImportModule("operator");
    by_time = operator ? PyObject_CallMethod(operator, "itemgetter", "i", 0) : NULL;  /* an item's (at, o) time */
    Py_XDECREF(operator);
    if (by_time == NULL) return NULL;
    if (PyType_Ready(&IdCacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&IdCacheType);
    if (PyModule_AddObject(m, "IdCache", (PyObject *)&IdCacheType) < 0) {
        Py_DECREF(&IdCacheType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
