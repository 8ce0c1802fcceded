# Receives sd_notify datagrams on an AF_UNIX datagram socket (a path, or @name
# for the abstract namespace) and prints each as one JSON line, as systemd would
# see them.  Node cannot open such a socket; the tests start this instead.
import json
import socket
import sys

name = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("\0" + name[1:] if name.startswith("@") else name)
print(json.dumps({"listening": name}), flush=True)
while True:
    data = sock.recv(8192)
    print(json.dumps({"message": data.decode()}), flush=True)
