/* The import's verification redraw: traced outlines painted in order into an image, as the
 * export's rasterizer (Pillow's polygon fill, which OpenCV's fillPoly matches for them) paints
 * them. One call draws every region of an image; fillPoly took a call a polygon and sorted its
 * edges each time.
 *
 *     fill(drawn, points, lengths, values) -> None
 *
 * drawn: a writable C-contiguous 2-D image of 1-, 2-, 4- or 8-byte integers; points: (N, 2) int32
 * vertices (x, y) of every polygon, one after the other; lengths: int64 vertices a polygon;
 * values: int64, what each polygon paints (stored in drawn's type, as numpy's cast would).
 *
 * A traced outline has its vertices on pixel centres and its edges along rows, columns or
 * diagonals, on the image (an edge of another slope, or a vertex off the image, raises
 * ValueError). For such a polygon the painted pixels are its edges' own pixels and the pixels
 * inside it: those between each pair of its edges' crossings of a row (both ends included), crossings taken with the usual half-open rule (an
 * edge counts from its top row to the row before its bottom one), so that a vertex is never
 * counted twice. A crossing is the pixel of its edge on that row, so what spans leave of the
 * edges is the vertices and the edges along rows, painted as such.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_buffers.h"

typedef struct {
    Py_ssize_t top, bottom; /* rows the edge crosses: top <= y < bottom */
    Py_ssize_t x;           /* its column at the row being filled */
    int slope;              /* column change a row down: -1, 0 or 1 */
} Edge;

typedef struct {
    uint8_t *pixels;
    Py_ssize_t height, width, itemsize;
    uint64_t value; /* the bytes to store (little-endian order of the machine's integers) */
} Canvas;

/* Plain loops over restrict pointers: the compiler turns them into vector stores. */
static void store16(uint16_t *restrict p, Py_ssize_t n, uint16_t v)
{
    for (Py_ssize_t i = 0; i < n; i++)
        p[i] = v;
}

static void store32(uint32_t *restrict p, Py_ssize_t n, uint32_t v)
{
    for (Py_ssize_t i = 0; i < n; i++)
        p[i] = v;
}

static void store64(uint64_t *restrict p, Py_ssize_t n, uint64_t v)
{
    for (Py_ssize_t i = 0; i < n; i++)
        p[i] = v;
}

/* Columns x0 to x1 of row y, all on the image: fill_polygon checks every vertex first, and an
 * edge's pixels and crossings lie between its vertices. */
static inline void paint_span(const Canvas *canvas, Py_ssize_t y, Py_ssize_t x0, Py_ssize_t x1)
{
    uint8_t *row = canvas->pixels + y * canvas->width * canvas->itemsize;
    Py_ssize_t n = x1 - x0 + 1;
    switch (canvas->itemsize) {
    case 1:
        memset(row + x0, (int)(uint8_t)canvas->value, (size_t)n);
        break;
    case 2:
        store16((uint16_t *)row + x0, n, (uint16_t)canvas->value);
        break;
    case 4:
        store32((uint32_t *)row + x0, n, (uint32_t)canvas->value);
        break;
    default:
        store64((uint64_t *)row + x0, n, canvas->value);
    }
}

typedef struct {
    Edge *edges;
    Edge **by_row; /* the edges ordered by their top row */
    Edge **active; /* the edges crossing the current row, by column */
    Py_ssize_t *starts; /* where each row's edges begin in by_row */
    Py_ssize_t size, rows;
} Scratch;

static int reserve(Scratch *scratch, Py_ssize_t n, Py_ssize_t rows)
{
    if (n > scratch->size) {
        void *edges = PyMem_RawRealloc(scratch->edges, (size_t)n * sizeof(Edge));
        if (edges == NULL)
            return -1;
        scratch->edges = edges;
        void *by_row = PyMem_RawRealloc(scratch->by_row, (size_t)n * sizeof(Edge *));
        if (by_row == NULL)
            return -1;
        scratch->by_row = by_row;
        void *active = PyMem_RawRealloc(scratch->active, (size_t)n * sizeof(Edge *));
        if (active == NULL)
            return -1;
        scratch->active = active;
        scratch->size = n;
    }
    if (rows + 1 > scratch->rows) {
        void *starts = PyMem_RawRealloc(scratch->starts, (size_t)(rows + 1) * sizeof(Py_ssize_t));
        if (starts == NULL)
            return -1;
        scratch->starts = starts;
        scratch->rows = rows + 1;
    }
    return 0;
}

static void free_scratch(Scratch *scratch)
{
    PyMem_RawFree(scratch->edges);
    PyMem_RawFree(scratch->by_row);
    PyMem_RawFree(scratch->active);
    PyMem_RawFree(scratch->starts);
}

/* The active edges by column; they were in order a row before, so nearly in order now. */
static void sort_active(Edge **active, Py_ssize_t n)
{
    for (Py_ssize_t i = 1; i < n; i++) {
        Edge *edge = active[i];
        Py_ssize_t j = i;
        for (; j > 0 && active[j - 1]->x > edge->x; j--)
            active[j] = active[j - 1];
        active[j] = edge;
    }
}

/* One polygon. Returns 0, -1 (no memory), -2 (an edge of another slope) or -3 (a vertex
 * outside the image). */
static int fill_polygon(const Canvas *canvas, const int32_t *points, Py_ssize_t n, Scratch *scratch)
{
    if (n == 0)
        return 0;
    Py_ssize_t low = points[1], high = points[1];
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t x = points[2 * i], y = points[2 * i + 1];
        if (x < 0 || x >= canvas->width || y < 0 || y >= canvas->height)
            return -3; /* traced outlines lie on their image: this is not one */
        low = y < low ? y : low;
        high = y > high ? y : high;
    }
    if (reserve(scratch, n, high - low + 1) < 0)
        return -1;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t x0 = points[2 * i], y0 = points[2 * i + 1];
        Py_ssize_t j = i + 1 < n ? i + 1 : 0;
        Py_ssize_t x1 = points[2 * j], y1 = points[2 * j + 1];
        Py_ssize_t dx = x1 - x0, dy = y1 - y0;
        Py_ssize_t ax = dx < 0 ? -dx : dx, ay = dy < 0 ? -dy : dy;
        if (dx && dy && ax != ay)
            return -2;
        /* The edge's own pixels: a row's, whole; another's, its first vertex (its last is the
         * next edge's first). Its rows but the last are its crossings, each the end of a span
         * painted below. */
        int sx = (dx > 0) - (dx < 0);
        if (dy == 0) {
            paint_span(canvas, y0, x0 < x1 ? x0 : x1, x0 < x1 ? x1 : x0);
            continue; /* no crossing */
        }
        paint_span(canvas, y0, x0, x0);
        Edge *edge = &scratch->edges[count++];
        if (dy > 0) {
            edge->top = y0, edge->bottom = y1, edge->x = x0, edge->slope = sx;
        } else {
            edge->top = y1, edge->bottom = y0, edge->x = x1, edge->slope = -sx;
        }
    }
    if (count < 2)
        return 0;
    /* edges by top row: a counting sort over the polygon's rows */
    Py_ssize_t rows = high - low + 1, *starts = scratch->starts;
    memset(starts, 0, (size_t)(rows + 1) * sizeof(Py_ssize_t));
    for (Py_ssize_t k = 0; k < count; k++)
        starts[scratch->edges[k].top - low + 1]++;
    for (Py_ssize_t r = 0; r < rows; r++)
        starts[r + 1] += starts[r];
    for (Py_ssize_t k = 0; k < count; k++) /* starts[r] ends up where row r + 1's begin */
        scratch->by_row[starts[scratch->edges[k].top - low]++] = &scratch->edges[k];
    Py_ssize_t next = 0, live = 0;
    Edge **active = scratch->active;
    for (Py_ssize_t y = low; y < high; y++) {
        Py_ssize_t begins = next, ends = starts[y - low];
        for (; next < ends; next++)
            active[live++] = scratch->by_row[next];
        if (next > begins || live > 1)
            sort_active(active, live);
        for (Py_ssize_t k = 0; k + 1 < live; k += 2)
            paint_span(canvas, y, active[k]->x, active[k + 1]->x);
        /* on to the next row: what ends here leaves, the rest moves along its slope */
        Py_ssize_t kept = 0;
        for (Py_ssize_t k = 0; k < live; k++) {
            Edge *edge = active[k];
            if (edge->bottom > y + 1) {
                edge->x += edge->slope;
                active[kept++] = edge;
            }
        }
        live = kept;
    }
    return 0;
}

static int integer_format(const Py_buffer *view)
{
    int is_signed;
    return integer_kind(view, &is_signed) == 0;
}

static PyObject *fill(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *drawn_obj, *points_obj, *lengths_obj, *values_obj;
    if (!PyArg_ParseTuple(args, "OOOO", &drawn_obj, &points_obj, &lengths_obj, &values_obj))
        return NULL;
    PyObject *objects[4] = {drawn_obj, points_obj, lengths_obj, values_obj};
    Py_buffer views[4];
    for (int k = 0; k < 4; k++) {
        int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (k == 0 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(objects[k], &views[k], flags) < 0) {
            while (k--)
                PyBuffer_Release(&views[k]);
            return NULL;
        }
    }
    Py_buffer drawn = views[0], points = views[1], lengths = views[2], values = views[3];
    const char *problem = NULL;
    Py_ssize_t polygons = lengths.len / 8, total = 0;
    if (drawn.ndim != 2 || !integer_format(&drawn))
        problem = "drawn must be a 2-D image of integers";
    else if (points.itemsize != 4 || !integer_format(&points) || points.len % 8)
        problem = "points must be int32 pairs";
    else if (lengths.itemsize != 8 || values.itemsize != 8 || !integer_format(&lengths)
             || !integer_format(&values) || values.len != lengths.len)
        problem = "lengths and values must be int64, one each a polygon";
    else {
        const int64_t *n = lengths.buf;
        for (Py_ssize_t k = 0; k < polygons && !problem; k++) {
            if (n[k] < 0)
                problem = "a polygon's length is negative";
            total += n[k];
        }
        if (!problem && total != points.len / 8)
            problem = "the lengths do not add up to the points";
    }
    int status = 0;
    Py_ssize_t bad = -1;
    if (!problem) {
        Scratch scratch = {NULL, NULL, NULL, NULL, 0, 0};
        Canvas canvas = {drawn.buf, drawn.shape[0], drawn.shape[1], drawn.itemsize, 0};
        const int64_t *n = lengths.buf, *v = values.buf;
        const int32_t *at = points.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t k = 0; k < polygons && status == 0; k++) {
            canvas.value = (uint64_t)v[k];
            status = fill_polygon(&canvas, at, (Py_ssize_t)n[k], &scratch);
            if (status)
                bad = k;
            at += 2 * n[k];
        }
        Py_END_ALLOW_THREADS
        free_scratch(&scratch);
    }
    for (int k = 0; k < 4; k++)
        PyBuffer_Release(&views[k]);
    if (problem) {
        PyErr_SetString(PyExc_TypeError, problem);
        return NULL;
    }
    if (status == -1)
        return PyErr_NoMemory();
    if (status == -2 || status == -3) {
        PyErr_Format(PyExc_ValueError, "polygon %zd has %s", bad,
                     status == -2 ? "an edge along no row, column or diagonal"
                                  : "a vertex outside the image");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS,
     "fill(drawn, points, lengths, values): traced outlines painted in order (see _fill.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fill", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fill(void) { return PyModule_Create(&module); }
