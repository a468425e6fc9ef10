#!/usr/bin/env python3
# Bulk throughput and ringgate CPU per MB through one WebSocket-style tunnel (after a 101):
# a Python echo backend and client on CPU 0, one ringgate worker on CPU 1.
# Usage: taskset -c 0 scripts/tunnel-bench.py target/release/ringgate [MB]
import socket, threading, time, sys, os, subprocess
MB = int(sys.argv[2]) if len(sys.argv) > 2 else 200
def backend(l):
    c,_ = l.accept()
    buf=b""
    while b"\r\n\r\n" not in buf: buf+=c.recv(65536)
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
    while True:
        d=c.recv(262144)
        if not d: break
        c.sendall(d)
    c.close()
l=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR,1); l.bind(("127.0.0.1",0)); l.listen(1)
bport=l.getsockname()[1]
threading.Thread(target=backend,args=(l,),daemon=True).start()
cfg=f'/tmp/tb-{os.getpid()}.toml'
open(cfg,'w').write(f'default_backend = "127.0.0.1:{bport}"\n[listener]\naddress = "127.0.0.1:19150"\n[admin]\naddress = ""\n[workers]\ncount = 1\ncpus = [1]\n[health]\nenabled = false\n')
p=subprocess.Popen(["taskset","-c","1",sys.argv[1],"--config",cfg],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
p.stdout.readline()
s=socket.create_connection(("127.0.0.1",19150))
s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
h=b""
while b"\r\n\r\n" not in h: h+=s.recv(4096)
rest=h.split(b"\r\n\r\n",1)[1]
def stat():
    f=open(f"/proc/{p.pid}/stat").read().split()
    return int(f[13])+int(f[14])
total=MB*1024*1024; chunk=b"x"*65536
got=len(rest)
def reader():
    global got
    while got<total:
        d=s.recv(262144)
        if not d: break
        got+=len(d)
t=threading.Thread(target=reader); c0=stat(); t0=time.time(); t.start()
sent=0
while sent<total:
    s.sendall(chunk); sent+=len(chunk)
t.join(); t1=time.time(); c1=stat()
tck=os.sysconf("SC_CLK_TCK")
print(f"{sys.argv[1].split('/')[-1]}: {MB} MB each way in {t1-t0:.2f}s = {MB/(t1-t0):.0f} MB/s, ringgate CPU {(c1-c0)/tck:.2f}s = {(c1-c0)/tck*1e3/MB:.2f} ms/MB")
s.close(); p.terminate(); p.wait(); os.remove(cfg)
