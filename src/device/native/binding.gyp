{
  "targets": [
    {
      "target_name": "tierfs_device",
      "sources": [
        "device.c",
        "uring.c"
      ],
      "cflags": [
        "-O2",
        "-Wall",
        "-Wextra",
        "-std=gnu11"
      ],
      "include_dirs": [
        "../../native"
      ],
      "libraries": [
        "-l:liburing.a"
      ]
    }
  ]
}
