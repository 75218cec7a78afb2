#!/usr/bin/python3
"""A Modal sandbox program, ported to corral by changing one line: the import.

Everything below the import is Modal's documented Sandbox API, unchanged.
"""
import corral as modal  # was: import modal

app = modal.App.lookup("sandbox-demo", create_if_missing=True)

with modal.enable_output():
    sb = modal.Sandbox.create(app=app, image=modal.Image.debian_slim(), timeout=60)

p = sb.exec("python3", "-c", "import sys\nfor i in range(3): print(i)\nprint('done', file=sys.stderr)")
for line in p.stdout:
    print("out:", line, end="")
print("err:", p.stderr.read(), end="")
p.wait()
print("exit:", p.returncode)

p = sb.exec("bash", "-c", "cat > /tmp/in.txt && wc -c < /tmp/in.txt")
p.stdin.write(b"hello from the client")
p.stdin.write_eof()
p.stdin.drain()
print("bytes:", p.stdout.read().strip())
p.wait()

sb.set_tags({"purpose": "demo"})
print("tags:", sb.get_tags())
print("listed:", any(s.object_id == sb.object_id for s in modal.Sandbox.list(app_id=app.app_id)))
sb.terminate()
sb.wait(raise_on_termination=False)
print("terminated:", sb.returncode is not None)
