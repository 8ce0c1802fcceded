{
  "targets": [
    {
      "target_name": "tierfs_fuse",
      "sources": [
        "fuse.c"
      ],
      "cflags": [
        "-O2",
        "-Wall",
        "-Wextra",
        "-std=gnu11",
        "<!@(pkg-config --cflags fuse3)"
      ],
      "libraries": [
        "<!@(pkg-config --libs fuse3)"
      ],
      "include_dirs": [
        "../../native"
      ]
    }
  ]
}
