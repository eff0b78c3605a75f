# The reconciliation digest (sha256-sum64-v1) as docs/api.md specifies it, written apart from
# the server's code: argv[1] is the event type's data types (JSON), argv[2] a file of events
# as the sender sent them; prints {"<customer>|<day start>": [count, digest]}.
import datetime, decimal, hashlib, json, sys

types = json.loads(sys.argv[1])
events = json.load(open(sys.argv[2]))

def plain(d):
    s = format(d, 'f')
    if '.' in s:
        s = s.rstrip('0').rstrip('.')
    return '0' if s in ('-0', '') else s

def instant(v):
    if isinstance(v, (int, float)):
        t = datetime.datetime.fromtimestamp(0, datetime.timezone.utc) + datetime.timedelta(microseconds=int(decimal.Decimal(str(v)) * 1000000))
    else:
        t = datetime.datetime.fromisoformat(v.replace('Z', '+00:00'))
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
    return t.astimezone(datetime.timezone.utc)

def text(ty, v):
    if ty.startswith('Nullable('):
        ty = ty[9:-1]
    if ty.startswith('Decimal'):
        return plain(decimal.Decimal(str(v)))
    if ty.startswith('Float'):
        return plain(decimal.Decimal(repr(float(v))))
    if ty.startswith('Int') or ty.startswith('UInt'):
        return str(int(v))
    if ty == 'Bool':
        return 'true' if v in (True, 'true') else 'false'
    return str(v)

def item(b):
    return str(len(b)).encode() + b':' + b + b','

out = {}
for e in events:
    t = instant(e['timestamp'])
    b = item(e['customer_id'].encode()) + item(t.strftime('%Y-%m-%dT%H:%M:%S.%fZ').encode())
    for name in sorted(types, key=lambda n: n.encode()):
        v = e['data'].get(name)
        if v is None:
            continue
        b += item(name.encode()) + item(text(types[name], v).encode())
    h = int.from_bytes(hashlib.sha256(b).digest()[:8], 'little')
    key = e['customer_id'] + '|' + t.strftime('%Y-%m-%dT00:00:00Z')
    n, d = out.get(key, (0, 0))
    out[key] = (n + 1, (d + h) % 2**64)
print(json.dumps({k: [n, '%016x' % d] for k, (n, d) in out.items()}))
