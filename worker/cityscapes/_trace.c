/* The outer borders of every 8-connected component of every value of an image, as OpenCV's
 * findContours (RETR_CCOMP, CHAIN_APPROX_SIMPLE) traces them on a mask of the value, in one call
 * for the whole image: the import had cropped, compared and traced each value's box in turn, in
 * all about 2.7 times the image's pixels for a jagged street scene.
 *
 *     outlines(ids, values, rows, cols, ends, skip) -> (bytearray, bytearray, n)
 *
 * ids: a C-contiguous 2-D integer image (as _runs.c reads it); values, rows, cols, ends: its runs
 * (value_runs: int64, grouped by value, in image order within a value); skip: a tuple of values
 * whose components are left out. The first bytearray holds two int64 arrays of n, one entry for
 * each component in order of value, then of its first pixel in image order: its value, and its
 * border's number of vertices; the second holds the vertices (x, y) as int32, component after
 * component.
 *
 * Components are joined from runs (runs of one value on neighbouring rows that overlap or touch
 * at a corner), each rooted at its first run. A border is followed from the component's first
 * pixel exactly as findContours follows an outer border: the first neighbour found turning
 * clockwise from the left, then each next one turning counter-clockwise from the way back, a
 * vertex written where the direction changes, until the first step repeats.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_buffers.h"

/* Steps to the 8 neighbours by direction code: 0 right, then counter-clockwise on screen. */
static const int STEP_X[8] = {1, 1, 0, -1, -1, -1, 0, 1};
static const int STEP_Y[8] = {0, -1, -1, -1, 0, 1, 1, 1};

typedef struct {
    const uint8_t *pixels;
    Py_ssize_t height, width, itemsize;
    int is_signed;
} Image;

static inline int64_t pixel_at(const Image *image, Py_ssize_t x, Py_ssize_t y)
{
    const uint8_t *p = image->pixels + (y * image->width + x) * image->itemsize;
    switch (image->itemsize) {
    case 1:
        return image->is_signed ? *(const int8_t *)p : *p;
    case 2:
        return image->is_signed ? *(const int16_t *)p : *(const uint16_t *)p;
    case 4:
        return image->is_signed ? (int64_t)*(const int32_t *)p : (int64_t)*(const uint32_t *)p;
    default:
        return *(const int64_t *)p;
    }
}

static inline int same(const Image *image, Py_ssize_t x, Py_ssize_t y, int64_t value)
{
    return x >= 0 && y >= 0 && x < image->width && y < image->height
        && pixel_at(image, x, y) == value;
}

typedef struct {
    int32_t *points;
    Py_ssize_t n, size;
} Points;

static int add_point(Points *points, Py_ssize_t x, Py_ssize_t y)
{
    if (points->n == points->size) {
        Py_ssize_t size = points->size ? 2 * points->size : 1 << 14;
        int32_t *grown = PyMem_RawRealloc(points->points, (size_t)size * 2 * sizeof(int32_t));
        if (grown == NULL)
            return -1;
        points->points = grown;
        points->size = size;
    }
    points->points[2 * points->n] = (int32_t)x;
    points->points[2 * points->n + 1] = (int32_t)y;
    points->n++;
    return 0;
}

/* The outer border of the component whose first pixel (in image order) is (x0, y0). */
static int follow_border(const Image *image, Py_ssize_t x0, Py_ssize_t y0, int64_t value,
                         Points *points)
{
    if (!same(image, x0, y0, value))
        return -2; /* runs of another image */
    /* A border passes each pixel at most four times; more steps would mean a walk that never
     * closes, which a component's border cannot be. */
    Py_ssize_t steps_left = 4 * image->height * image->width + 8;
    int s = 4, s_end = 4;
    do {
        s = (s - 1) & 7;
    } while (!same(image, x0 + STEP_X[s], y0 + STEP_Y[s], value) && s != s_end);
    if (s == s_end) /* a lone pixel */
        return add_point(points, x0, y0);
    Py_ssize_t x1 = x0 + STEP_X[s], y1 = y0 + STEP_Y[s]; /* the first step's end */
    Py_ssize_t x3 = x0, y3 = y0;
    int prev_s = s ^ 4;
    for (;;) {
        Py_ssize_t x4, y4;
        s_end = s;
        for (;;) {
            s = (s + 1) & 7;
            x4 = x3 + STEP_X[s], y4 = y3 + STEP_Y[s];
            if (same(image, x4, y4, value))
                break;
            if (s == s_end) /* cannot happen: the way back is always there */
                return -2;
        }
        if (s != prev_s) {
            if (add_point(points, x3, y3) < 0)
                return -1;
            prev_s = s;
        }
        if (x4 == x0 && y4 == y0 && x3 == x1 && y3 == y1)
            return 0;
        if (--steps_left == 0)
            return -2;
        x3 = x4, y3 = y4;
        s = (s + 4) & 7;
    }
}

static Py_ssize_t root_of(Py_ssize_t *parent, Py_ssize_t i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void join(Py_ssize_t *parent, Py_ssize_t a, Py_ssize_t b)
{
    a = root_of(parent, a), b = root_of(parent, b);
    if (a < b) /* the root is the component's first run */
        parent[b] = a;
    else if (b < a)
        parent[a] = b;
}

static PyObject *outlines(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *ids_obj, *arrays[4], *skip_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO!", &ids_obj, &arrays[0], &arrays[1], &arrays[2],
                          &arrays[3], &PyTuple_Type, &skip_obj))
        return NULL;
    Py_ssize_t skips = PyTuple_GET_SIZE(skip_obj);
    int64_t skip[8];
    if (skips > 8) {
        PyErr_SetString(PyExc_ValueError, "at most 8 values to skip");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < skips; k++) {
        skip[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(skip_obj, k));
        if (skip[k] == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_buffer ids, runs[4];
    int held = 0;
    PyObject *result = NULL;
    const char *problem = NULL;
    int is_signed = 0;
    if (PyObject_GetBuffer(ids_obj, &ids, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    for (; held < 4; held++)
        if (PyObject_GetBuffer(arrays[held], &runs[held], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            goto done;
    if (ids.ndim != 2 || integer_kind(&ids, &is_signed) < 0
        || (ids.itemsize == 8 && !is_signed)) /* values are read as int64 */
        problem = "ids must be a 2-D image of integers";
    for (int k = 0; k < 4 && !problem; k++)
        if (runs[k].itemsize != 8 || runs[k].len != runs[0].len)
            problem = "runs must be int64 arrays of one length";
    if (problem) {
        PyErr_SetString(PyExc_TypeError, problem);
        goto done;
    }
    Image image = {ids.buf, ids.shape[0], ids.shape[1], ids.itemsize, is_signed};
    const int64_t *values = runs[0].buf, *rows = runs[1].buf, *cols = runs[2].buf,
                  *ends = runs[3].buf;
    Py_ssize_t n = runs[0].len / 8;
    Py_ssize_t *parent = PyMem_RawMalloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    /* each component's value, then each one's number of vertices: the table returned */
    int64_t *found = PyMem_RawMalloc((size_t)(n ? n : 1) * 2 * sizeof(int64_t));
    Points points = {NULL, 0, 0};
    Py_ssize_t components = 0;
    int status = parent == NULL || found == NULL ? -1 : 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && status == 0; i++)
        parent[i] = i;
    /* join runs of one value on neighbouring rows: overlapping, or touching at a corner */
    for (Py_ssize_t group = 0; group < n && status == 0;) {
        Py_ssize_t end = group;
        while (end < n && values[end] == values[group])
            end++;
        int skipped = 0;
        for (Py_ssize_t k = 0; k < skips; k++)
            skipped |= values[group] == skip[k];
        if (skipped) {
            group = end;
            continue;
        }
        Py_ssize_t above = group, above_end = group; /* runs of the row before */
        for (Py_ssize_t row_start = group; row_start < end;) {
            Py_ssize_t row_end = row_start;
            while (row_end < end && rows[row_end] == rows[row_start])
                row_end++;
            if (above_end > above && rows[above] == rows[row_start] - 1) {
                Py_ssize_t j = above;
                for (Py_ssize_t i = row_start; i < row_end; i++) {
                    while (j < above_end && ends[j] < cols[i] - 1)
                        j++;
                    for (Py_ssize_t k = j; k < above_end && cols[k] <= ends[i] + 1; k++)
                        join(parent, i, k);
                }
            }
            above = row_start, above_end = row_end;
            row_start = row_end;
        }
        for (Py_ssize_t i = group; i < end && status == 0; i++) {
            if (root_of(parent, i) != i)
                continue;
            Py_ssize_t before = points.n;
            status = follow_border(&image, cols[i], rows[i], values[i], &points);
            found[components] = values[i];
            found[n + components++] = points.n - before;
        }
        group = end;
    }
    Py_END_ALLOW_THREADS
    if (status == 0) {
        PyObject *table = PyByteArray_FromStringAndSize(NULL, components * 2 * 8);
        PyObject *vertices = PyByteArray_FromStringAndSize((const char *)points.points,
                                                           points.n * 2 * 4);
        if (table != NULL && vertices != NULL) {
            int64_t *out = (int64_t *)PyByteArray_AS_STRING(table);
            memcpy(out, found, (size_t)components * 8);
            memcpy(out + components, found + n, (size_t)components * 8);
            result = Py_BuildValue("(NNn)", table, vertices, components);
        } else {
            Py_XDECREF(table);
            Py_XDECREF(vertices);
        }
    } else if (status == -1) {
        PyErr_NoMemory();
    } else {
        PyErr_SetString(PyExc_ValueError, "the runs do not match the image");
    }
    PyMem_RawFree(parent);
    PyMem_RawFree(found);
    PyMem_RawFree(points.points);
done:
    for (int k = 0; k < held; k++)
        PyBuffer_Release(&runs[k]);
    PyBuffer_Release(&ids);
    return result;
}

static PyMethodDef methods[] = {
    {"outlines", outlines, METH_VARARGS,
     "outlines(ids, values, rows, cols, ends, skip) -> (bytearray, bytearray, n): outer borders "
     "of every component, as findContours traces them (see _trace.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_trace", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__trace(void) { return PyModule_Create(&module); }
