# A VM renewing its own lease as fast as it can (bench/isolation/run.sh).
#   renew.py IFACE MY_IP GW_IP GW_MAC SECONDS closed WINDOW   a client: keeps WINDOW RENEWING REQUESTs in
#                                                             flight, sends the next one for each ACK (a new
#                                                             xid each); all re-sent after 1 s without an ACK
#   renew.py IFACE MY_IP GW_IP GW_MAC SECONDS flood           open loop: the same REQUEST flat out, ACKs ignored
# Prints "sent N acks M". Raw AF_PACKET socket; the lease must be ours (client id 01+MAC, as udhcpc sends it).
import select, socket, struct, sys, time

iface, myip, gwip, gwmac, secs, mode = sys.argv[1:7]
window = int(sys.argv[7]) if len(sys.argv) > 7 else 1
own = bytes.fromhex(open('/sys/class/net/%s/address' % iface).read().strip().replace(':', ''))
gw_mac = bytes.fromhex(gwmac.replace(':', ''))
me, gw = socket.inet_aton(myip), socket.inet_aton(gwip)

def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t > 0xffff: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff

cid = b'\x01' + own
dhcp = struct.pack('!BBBBIHH4s4s4s4s', 1, 1, 6, 0, 0, 0, 0, me, b'\0' * 4, b'\0' * 4, b'\0' * 4) + own + b'\0' * 10 + b'\0' * 192
dhcp += b'\x63\x82\x53\x63' + bytes([53, 1, 3, 61, len(cid)]) + cid + b'\xff'
udp = struct.pack('!HHHH', 68, 67, 8 + len(dhcp), 0) + dhcp
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, me, gw)
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
frame = bytearray(gw_mac + own + b'\x08\x00' + ip + udp)
XID = 14 + 20 + 8 + 4  # UDP checksum 0: patching the xid needs no checksum update

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((iface, 0))
sent = acks = 0
end = time.time() + float(secs)

def send(xid):
    global sent
    frame[XID:XID + 4] = struct.pack('!I', xid)
    while True:
        try:
            s.send(frame); sent += 1; return
        except BlockingIOError:
            time.sleep(0.0002)
        except OSError:
            time.sleep(0.0002)

if mode == 'flood':
    xid = 1
    s.setblocking(False)
    while time.time() < end:
        try:
            s.send(frame); sent += 1
        except OSError:
            time.sleep(0.0002)
else:
    pending, nxt, last = set(), 1, time.time()
    for _ in range(window):
        pending.add(nxt); send(nxt); nxt += 1
    while time.time() < end:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            if time.time() - last > 1.0:
                pending.clear()
                for _ in range(window):
                    pending.add(nxt); send(nxt); nxt += 1
                last = time.time()
            continue
        f = s.recv(2048)
        if len(f) < 42 + 240 or f[23] != 17 or f[34:36] != b'\x00\x43': continue
        x = struct.unpack('!I', f[42 + 4:42 + 8])[0]
        if x not in pending or f[42 + 240:42 + 243] != bytes([53, 1, 5]): continue
        pending.discard(x); acks += 1; last = time.time()
        pending.add(nxt); send(nxt); nxt += 1
print('sent %d acks %d' % (sent, acks))
