{
  "targets": [
    {
      "target_name": "tierfs_device",
      "sources": [
        "device.c"
      ],
      "cflags": [
        "-O2",
        "-Wall",
        "-Wextra",
        "-std=gnu11"
      ],
      "include_dirs": [
        "../../native"
      ]
    }
  ]
}
