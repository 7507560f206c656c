/* Horizontal runs of equal value in a 2-D integer image, sorted by value (ties in image order):
 * what tracing and masks start from (trace.value_runs). numpy took six passes over the pixels
 * and three over the runs, with a temporary array each; this is one pass and a counting sort.
 *
 *     scan(ids) -> (bytearray, n)
 *
 * ids: a C-contiguous 2-D array of 8- to 64-bit signed or 8- to 32-bit unsigned integers (any
 * object with the buffer protocol). The bytearray holds four int64 arrays of n each, one after
 * the other: the runs' values, rows, first columns and last columns.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_buffers.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Counting sort while the values span at most this many (8 MiB of counts); else a comparison
 * sort (only 32- and 64-bit images can get there). */
#define COUNTING_SPAN (1 << 20)

typedef struct {
    int64_t *columns[4]; /* of each run, in image order: value, row, first and last column */
    Py_ssize_t n, size;
    int64_t low, high;
} Runs;

static int grow(Runs *runs)
{
    Py_ssize_t size = runs->size ? 2 * runs->size : 4096;
    for (int k = 0; k < 4; k++) {
        int64_t *column = PyMem_RawRealloc(runs->columns[k], (size_t)size * sizeof(int64_t));
        if (column == NULL)
            return -1;
        runs->columns[k] = column;
    }
    runs->size = size;
    return 0;
}

static void free_runs(Runs *runs)
{
    for (int k = 0; k < 4; k++)
        PyMem_RawFree(runs->columns[k]);
}

/* The first column from c on where the row's pixels (`size` bytes each) stop equalling *value,
 * or a column near it, a block of 16 (SSE2) or 8 bytes at a time; the caller finishes a pixel at
 * a time. */
static inline Py_ssize_t same_from(const void *row, Py_ssize_t c, Py_ssize_t width,
                                   const void *value, size_t size)
{
    const uint8_t *bytes = row;
    uint8_t lanes[16];
    for (size_t k = 0; k < 16; k += size)
        memcpy(lanes + k, value, size);
    Py_ssize_t step = (Py_ssize_t)(16 / size);
#if defined(__SSE2__)
    __m128i same = _mm_loadu_si128((const __m128i *)lanes);
    for (; c + step <= width; c += step) {
        __m128i block = _mm_loadu_si128((const __m128i *)(bytes + c * size));
        unsigned differ = ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(block, same)) & 0xFFFFu;
        if (differ)
            return c + (Py_ssize_t)(__builtin_ctz(differ) / size);
    }
#else
    uint64_t same, block;
    memcpy(&same, lanes, 8);
    for (step /= 2; c + step <= width; c += step) {
        memcpy(&block, bytes + c * size, 8);
        if (block != same)
            break;
    }
#endif
    return c;
}

#define SCAN(NAME, T)                                                                           \
    static int NAME(const T *pixels, Py_ssize_t height, Py_ssize_t width, Runs *runs)          \
    {                                                                                           \
        for (Py_ssize_t r = 0; r < height; r++) {                                               \
            const T *row = pixels + r * width;                                                  \
            Py_ssize_t c = 0;                                                                   \
            while (c < width) {                                                                 \
                T value = row[c];                                                               \
                if (runs->n == runs->size && grow(runs) < 0)                                    \
                    return -1;                                                                  \
                Py_ssize_t at = runs->n++;                                                      \
                runs->columns[0][at] = (int64_t)value;                                          \
                runs->columns[1][at] = r;                                                       \
                runs->columns[2][at] = c;                                                       \
                if ((int64_t)value < runs->low)                                                 \
                    runs->low = (int64_t)value;                                                 \
                if ((int64_t)value > runs->high)                                                \
                    runs->high = (int64_t)value;                                                \
                c++;                                                                            \
                c = same_from(row, c, width, &value, sizeof(T));                               \
                for (; c < width && row[c] == value; c++)                                       \
                    ;                                                                           \
                runs->columns[3][at] = c - 1;                                                   \
            }                                                                                   \
        }                                                                                       \
        return 0;                                                                               \
    }

SCAN(scan_i8, int8_t)
SCAN(scan_u8, uint8_t)
SCAN(scan_i16, int16_t)
SCAN(scan_u16, uint16_t)
SCAN(scan_i32, int32_t)
SCAN(scan_u32, uint32_t)
SCAN(scan_i64, int64_t)

static const Runs *sorting; /* qsort's comparison has no context argument */

static int by_value_then_place(const void *x, const void *y)
{
    Py_ssize_t i = *(const Py_ssize_t *)x, j = *(const Py_ssize_t *)y;
    int64_t a = sorting->columns[0][i], b = sorting->columns[0][j];
    if (a != b)
        return a < b ? -1 : 1;
    return i < j ? -1 : (i > j);
}

/* order[k]: the run that comes k-th by value, ties in image order. */
static int sort_runs(const Runs *runs, Py_ssize_t *order)
{
    Py_ssize_t n = runs->n;
    if (n && (uint64_t)runs->high - (uint64_t)runs->low < COUNTING_SPAN) {
        Py_ssize_t span = (Py_ssize_t)(runs->high - runs->low) + 1;
        Py_ssize_t *next = PyMem_RawCalloc((size_t)span, sizeof(Py_ssize_t));
        if (next == NULL)
            return -1;
        const int64_t *values = runs->columns[0];
        for (Py_ssize_t i = 0; i < n; i++)
            next[values[i] - runs->low]++;
        Py_ssize_t at = 0;
        for (Py_ssize_t v = 0; v < span; v++) {
            Py_ssize_t count = next[v];
            next[v] = at;
            at += count;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            order[next[values[i] - runs->low]++] = i;
        PyMem_RawFree(next);
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = i;
    sorting = runs; /* the GIL is held: no other call can be sorting */
    qsort(order, (size_t)n, sizeof(Py_ssize_t), by_value_then_place);
    return 0;
}

static int scanner_for(const Py_buffer *view,
                       int (**scan)(const void *, Py_ssize_t, Py_ssize_t, Runs *))
{
    typedef int (*Scan)(const void *, Py_ssize_t, Py_ssize_t, Runs *);
    int is_signed;
    if (integer_kind(view, &is_signed) < 0)
        return -1;
    int is_unsigned = !is_signed;
    Py_ssize_t size = view->itemsize;
    if (is_signed && size == 1) *scan = (Scan)scan_i8;
    else if (is_unsigned && size == 1) *scan = (Scan)scan_u8;
    else if (is_signed && size == 2) *scan = (Scan)scan_i16;
    else if (is_unsigned && size == 2) *scan = (Scan)scan_u16;
    else if (is_signed && size == 4) *scan = (Scan)scan_i32;
    else if (is_unsigned && size == 4) *scan = (Scan)scan_u32;
    else if (is_signed && size == 8) *scan = (Scan)scan_i64;
    else
        return -1;
    return 0;
}

static PyObject *scan(PyObject *Py_UNUSED(module), PyObject *ids)
{
    Py_buffer view;
    if (PyObject_GetBuffer(ids, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    int (*scan_rows)(const void *, Py_ssize_t, Py_ssize_t, Runs *);
    if (view.ndim != 2 || scanner_for(&view, &scan_rows) < 0) {
        PyErr_Format(PyExc_TypeError, "scan wants a 2-D integer image, not %d-D of '%s'",
                     view.ndim, view.format ? view.format : "B");
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t height = view.shape[0], width = view.shape[1];
    Runs runs = {{NULL, NULL, NULL, NULL}, 0, 0, INT64_MAX, INT64_MIN};
    Py_ssize_t *order = NULL;
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = scan_rows(view.buf, height, width, &runs) < 0;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_ssize_t n = runs.n;
    PyObject *out = failed ? NULL : PyByteArray_FromStringAndSize(NULL, 4 * n * 8);
    if (out != NULL)
        order = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    failed = out == NULL || order == NULL || sort_runs(&runs, order) < 0;
    if (!failed) {
        int64_t *columns = (int64_t *)PyByteArray_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (int j = 0; j < 4; j++) {
            int64_t *to = columns + j * n;
            const int64_t *from = runs.columns[j];
            for (Py_ssize_t k = 0; k < n; k++)
                to[k] = from[order[k]];
        }
        Py_END_ALLOW_THREADS
    }
    free_runs(&runs);
    PyMem_RawFree(order);
    if (failed) {
        Py_XDECREF(out);
        return PyErr_NoMemory();
    }
    PyObject *result = Py_BuildValue("(Nn)", out, n);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(ids) -> (bytearray, n): values, rows, first and last columns of the image's runs of "
     "equal value (int64, n each), sorted by value, ties in image order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_runs", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__runs(void) { return PyModule_Create(&module); }
