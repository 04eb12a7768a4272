import subprocess
import sys


def test_import_loads_nothing_heavy():
    code = "import sys, edgeshrink; print(sorted(m for m in ('torch', 'numpy', 'onnx', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
