/* Shared by the compiled parts: what kind of integers a buffer (a numpy array) holds. */
#ifndef CITYSCAPES_BUFFERS_H
#define CITYSCAPES_BUFFERS_H

#include <Python.h>
#include <string.h>

/* 0 for 1-, 2-, 4- or 8-byte integers in the machine's byte order, *is_signed set; -1 for
 * anything else. */
static inline int integer_kind(const Py_buffer *view, int *is_signed)
{
    const char *format = view->format ? view->format : "B";
    if (*format == '@' || *format == '=' || *format == (PY_LITTLE_ENDIAN ? '<' : '>'))
        format++;
    if (strlen(format) != 1)
        return -1;
    *is_signed = strchr("bhilq", *format) != NULL;
    if (!*is_signed && strchr("BHILQ", *format) == NULL)
        return -1;
    Py_ssize_t size = view->itemsize;
    return size == 1 || size == 2 || size == 4 || size == 8 ? 0 : -1;
}

#endif
