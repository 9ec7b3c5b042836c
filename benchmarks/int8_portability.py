"""Same int8 answers on CPUs with and without VNNI: the shipped 7-bit files against the former 8-bit scheme.

For each shipped model it quantizes the fp32 ONNX file once more with 8-bit weights (the former
scheme, same 512 calibration faces), then runs the shipped 7-bit int8 file and that 8-bit one

* here, and
* on an AVX2-only AMD EPYC without AVX-512/VNNI, emulated by QEMU's user mode
  (``qemu-x86_64 -cpu EPYC-Rome``, Debian's ``qemu-user``): ONNX Runtime picks its kernels by CPUID,
  so it runs the 16-bit ``vpmaddubsw`` kernels that saturate, exactly as such a host would,

on --n PrivateTest faces and on the artifact's host-check faces, and reports per file and CPU the
top-1 agreement with fp32, the accuracy, whether the logits are bit-identical to this host's, and the
host check's verdict. The emulation is ~100x slower than the CPU (fp32 is computed here only); its
figures are answers, not speeds. The forward rate here (2 threads, batch 256) is measured in the same run.

python benchmarks/int8_portability.py        # -> benchmarks/results/int8_portability.json (~6 min)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "int8_portability.json"
EMULATED_CPU = "EPYC-Rome"  # AMD EPYC 7002: AVX2, no AVX-512, no VNNI


def _logits(files: dict[str, str], x: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    out = {}
    for key, f in files.items():
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.log_severity_level = threads, 3
        s = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
        out[key] = np.concatenate([s.run(None, {"x": x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    return out


def _rate(f: str, x: np.ndarray, threads: int) -> float:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.log_severity_level = threads, 3
    s = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
    s.run(None, {"x": x[:256]})  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), 256):
        s.run(None, {"x": x[i : i + 256]})
    return round(len(x) / (time.perf_counter() - t0), 1)


def worker(inputs: str, output: str, files: list[str]) -> None:
    """Run under the emulator: int8 logits of every file on the saved inputs."""
    x = np.load(inputs)["x"]
    res = _logits({str(i): f for i, f in enumerate(files)}, x, threads=2)
    np.savez(output, **res)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None)
    p.add_argument("--n", type=int, default=512, help="PrivateTest faces (seeded sample) run under emulation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], a.worker[1], a.worker[2:])
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        sys.exit("needs QEMU's user mode to emulate an AVX2-only CPU: apt-get install qemu-user")

    from fer_ray.inference.artifact import SHIPPED_MODELS, load_artifact
    from fer_ray.inference.engine import ONNX_FILES, model_input
    from fer_ray.inference.export import labeled_faces
    from fer_ray.inference.host_check import (
        CALIBRATION_FACES,
        compare,
        cpu_description,
        int8_pair_bound,
        load_check,
        quantize_int8,
    )

    data = fer2013_or_exit(a.data)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8_portability_") as tmp:
        for name in sorted(set(SHIPPED_MODELS) - {"default"}):
            art_dir = SHIPPED_MODELS[name]
            pp = load_artifact(art_dir, engine="torch").preprocess
            faces, labels = labeled_faces(data, "test", pp, limit=a.n, seed=0)
            check_faces, check_ref = load_check(art_dir)
            x = np.concatenate([model_input(faces, pp), model_input(check_faces, pp)])
            eight = Path(tmp, f"{name}.8bit.onnx")
            calib = labeled_faces(data, "train", pp, limit=CALIBRATION_FACES, seed=0)[0]  # as the export's
            quantize_int8(art_dir / ONNX_FILES["onnx"], eight, calib, pp, reduce_range=False)
            files = {"int8 7-bit (shipped)": str(art_dir / ONNX_FILES["onnx-int8"]), "int8 8-bit (former)": str(eight)}
            native = _logits({"fp32": str(art_dir / ONNX_FILES["onnx"]), **files}, x, a.threads)
            np.savez(Path(tmp, "x.npz"), x=x)
            t0 = time.time()
            subprocess.run(
                [qemu, "-cpu", EMULATED_CPU, sys.executable, __file__, "--worker", f"{tmp}/x.npz", f"{tmp}/emu.npz"]
                + list(files.values()),
                check=True,
                stderr=subprocess.DEVNULL,  # QEMU lists the host CPU features TCG cannot emulate
            )
            print(f"{name}: emulated {EMULATED_CPU} in {time.time() - t0:.0f} s", flush=True)
            emu = np.load(Path(tmp, "emu.npz"))
            n, ref = len(faces), native["fp32"]
            for i, (label, f) in enumerate(files.items()):
                bound = int8_pair_bound(f)
                for cpu, logits in (("this host", native[label]), (f"emulated {EMULATED_CPU}", emu[str(i)])):
                    chk = compare("onnx-int8", logits[n:], check_ref)
                    rows.append(
                        {
                            "model": name,
                            "file": label,
                            "cpu": cpu,
                            "max_pair_sum": bound["max_pair_sum"],
                            "agreement_with_fp32": round(float((logits[:n].argmax(1) == ref[:n].argmax(1)).mean()), 4),
                            "accuracy": round(float((logits[:n].argmax(1) == labels).mean()), 4),
                            "fp32_accuracy": round(float((ref[:n].argmax(1) == labels).mean()), 4),
                            "bit_identical_to_this_host": bool(np.array_equal(logits, native[label])),
                            "host_check": {k: getattr(chk, k) for k in ("agreement", "mean_abs_diff", "passed")},
                            "faces_per_s_this_host": _rate(f, x, a.threads) if cpu == "this host" else None,
                        }
                    )
                    r = rows[-1]
                    print(
                        f"  {label:<22} {cpu:<20} agree {r['agreement_with_fp32']:.2%} acc {r['accuracy']:.2%} "
                        f"bit-identical {r['bit_identical_to_this_host']} check {'pass' if chk.passed else 'FAIL'} "
                        f"(agree {chk.agreement:.1%}, mean |dp| {chk.mean_abs_diff:.4f})"
                    )
            fp32_rate = _rate(str(art_dir / ONNX_FILES["onnx"]), x, a.threads)
            rows.append({"model": name, "file": "fp32", "cpu": "this host", "faces_per_s_this_host": fp32_rate})
    write_result(
        {
            "benchmark": "int8_portability",
            "command": "python benchmarks/int8_portability.py",
            "privatetest_faces": a.n,
            "emulated_cpu": f"qemu-x86_64 -cpu {EMULATED_CPU} (AVX2, no AVX-512/VNNI)",
            "host_cpu": cpu_description(),
            "rows": rows,
            "machine": machine_info(),
        },
        a.out,
    )


if __name__ == "__main__":
    main()
