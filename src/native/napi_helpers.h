/*
 * What both native addons (src/device/native, src/fuse/native) need of N-API
 * beyond the API itself: an exact argument count, errors with a code, and
 * the rows of an exports table.
 */
#ifndef TIERFS_NAPI_HELPERS_H
#define TIERFS_NAPI_HELPERS_H
#include <node_api.h>
#include <stdio.h>
#include <string.h>

/* One exported function of an addon's property table. */
#define EXPORT_FUNCTION(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

/* The call must have exactly `want` arguments; otherwise a TypeError is thrown and 0 returned. */
static inline int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_type_error(env, NULL, "wrong number of arguments");
    return 0;
  }
  return 1;
}

/* An Error whose `code` is `code` (not thrown yet: the caller may add properties first); NULL if it could not be made. */
static inline napi_value coded_error(napi_env env, const char *code, const char *text) {
  napi_value c, msg, error;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) != napi_ok || napi_create_error(env, c, msg, &error) != napi_ok)
    return NULL;
  return error;
}

/* Throw an Error for errno `err` like Node's fs errors: "what: message", `code` its name, `errno` positive. Returns NULL. */
static inline napi_value throw_errno(napi_env env, int err, const char *what) {
  char text[160];
  const char *name = strerrorname_np(err);
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_value error = coded_error(env, name ? name : "EIO", text), errnum;
  if (!error) return NULL;
  if (napi_create_int32(env, err, &errnum) == napi_ok) napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

#endif
