/* io_uring for the flash tier (uring.c): adds ringOpen, ringPrep, ringSubmit, ringRegister, ringClose to the addon's exports. */
#ifndef TIERFS_URING_H
#define TIERFS_URING_H
#include <node_api.h>

void uring_define(napi_env env, napi_value exports);

#endif
