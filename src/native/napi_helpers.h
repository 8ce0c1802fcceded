/*
 * What both native addons (src/device/native, src/fuse/native) need of N-API
 * beyond the API itself: an exact argument count and errors with a code.
 */
#ifndef TIERFS_NAPI_HELPERS_H
#define TIERFS_NAPI_HELPERS_H
#include <node_api.h>

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

#endif
