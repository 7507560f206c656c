/* PNG row unfiltering (PNG spec, section 9) for grey images, the part of decoding a label image
 * that Python, numpy and Pillow's byte-at-a-time loop cannot do fast: a Paeth, Sub or Average
 * byte depends on the one a pixel before it. Inflating is zlib-ng's; chunks and limits are
 * checked in png.py.
 *
 *     unfilter(raw, height, width, depth) -> bytearray
 *
 * raw: the inflated image data, height rows of (1 filter byte + width * depth / 8 bytes); depth:
 * 8 or 16 bits a sample. 16-bit samples are written in native order (PNG's are big-endian). A
 * filter type over 4 raises ValueError naming the row.
 *
 * The left neighbours are carried in registers, not read back from the row just written (a
 * store-to-load round trip a byte made the Sub filter 1.3 ns a byte); 16-bit samples are swapped
 * as they are written, the row above read through the same swap.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE uint8_t paeth(int a, int b, int c)
{
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    int ab = pb < pa ? b : a; /* branch-free: the choices are data, not jumps */
    int best = pb < pa ? pb : pa;
    return (uint8_t)(pc < best ? c : ab);
}

/* Rows of `bpp` bytes a pixel; `swap` (0 or 1) exchanges the bytes of each 16-bit sample on
 * output. Both are constants where it is called, so each loop is compiled for them. Returns the
 * first row with an unknown filter type, or -1. */
ALWAYS_INLINE Py_ssize_t unfilter_rows(const uint8_t *in, uint8_t *out, const uint8_t *zeros,
                                       Py_ssize_t height, Py_ssize_t n, const int bpp,
                                       const int swap)
{
    for (Py_ssize_t r = 0; r < height; r++) {
        const uint8_t *row = in + r * (n + 1) + 1;
        const uint8_t *prev = r ? out + (r - 1) * n : zeros;
        uint8_t *dest = out + r * n;
        uint8_t a[2] = {0, 0}, c[2] = {0, 0}; /* left, and above-left, of each byte lane */
        Py_ssize_t i;
        int k;
#define AT(i, k) ((i) + ((k) ^ swap))
        switch (row[-1]) {
        case 0:
            for (i = 0; i < n; i += bpp)
                for (k = 0; k < bpp; k++)
                    dest[AT(i, k)] = row[i + k];
            break;
        case 1:
            for (i = 0; i < n; i += bpp)
                for (k = 0; k < bpp; k++)
                    dest[AT(i, k)] = a[k] = (uint8_t)(row[i + k] + a[k]);
            break;
        case 2:
            for (i = 0; i < n; i += bpp)
                for (k = 0; k < bpp; k++)
                    dest[AT(i, k)] = (uint8_t)(row[i + k] + prev[AT(i, k)]);
            break;
        case 3:
            for (i = 0; i < n; i += bpp)
                for (k = 0; k < bpp; k++)
                    dest[AT(i, k)] = a[k] = (uint8_t)(row[i + k] + ((a[k] + prev[AT(i, k)]) >> 1));
            break;
        case 4:
            for (i = 0; i < n; i += bpp)
                for (k = 0; k < bpp; k++) {
                    uint8_t b = prev[AT(i, k)];
                    /* b == c (the row above flat here: nearly everywhere in a label image)
                     * always predicts a; the branch then skips the long chain of paeth() */
                    if (__builtin_expect(b == c[k], 1))
                        a[k] = (uint8_t)(row[i + k] + a[k]);
                    else
                        a[k] = (uint8_t)(row[i + k] + paeth(a[k], b, c[k]));
                    dest[AT(i, k)] = a[k];
                    c[k] = b;
                }
            break;
        default:
            return r;
        }
#undef AT
    }
    return -1;
}

static PyObject *unfilter(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer raw;
    Py_ssize_t height, width;
    int depth;
    if (!PyArg_ParseTuple(args, "y*nni", &raw, &height, &width, &depth))
        return NULL;
    Py_ssize_t n = width * (depth / 8);
    if ((depth != 8 && depth != 16) || height < 0 || width <= 0 || raw.len != height * (n + 1)) {
        PyBuffer_Release(&raw);
        PyErr_SetString(PyExc_ValueError, "raw data does not match the image's size");
        return NULL;
    }
    PyObject *result = PyByteArray_FromStringAndSize(NULL, height * n);
    uint8_t *zeros = PyMem_RawCalloc(1, (size_t)n);
    if (result == NULL || zeros == NULL) {
        PyBuffer_Release(&raw);
        PyMem_RawFree(zeros);
        if (result == NULL)
            return NULL;
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    const uint8_t *in = raw.buf;
    uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(result);
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    if (depth == 8)
        bad = unfilter_rows(in, out, zeros, height, n, 1, 0);
    else
        bad = unfilter_rows(in, out, zeros, height, n, 2, PY_LITTLE_ENDIAN);
    Py_END_ALLOW_THREADS
    int type = bad >= 0 ? in[bad * (n + 1)] : 0;
    PyBuffer_Release(&raw);
    PyMem_RawFree(zeros);
    if (bad >= 0) {
        Py_DECREF(result);
        PyErr_Format(PyExc_ValueError, "filter type %d in row %zd", type, bad);
        return NULL;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"unfilter", unfilter, METH_VARARGS,
     "unfilter(raw, height, width, depth) -> bytearray: a grey PNG's rows unfiltered."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_unfilter", NULL, -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__unfilter(void) { return PyModule_Create(&module); }
