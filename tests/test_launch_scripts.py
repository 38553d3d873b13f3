"""launch/slurm_gpu.sh and launch/tpu_pod.sh with stand-in `scontrol`, `srun`, `gcloud` and `python` commands.

The stand-ins (small scripts put first on PATH) record what they were called with, and `srun` starts its tasks the
way SLURM does (SLURM_PROCID / SLURM_LOCALID per task), so the scripts' argument quoting and environment handling
run for real without a cluster. No JAX: each test takes well under a second.
"""

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.system

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# Spaces and a quote: the arguments must reach launch.train intact through srun / ssh.
ARGS = ["--config", "configs/scannet.py", "--workdir", "/shared/ckpt/run one", "--config.data.root=/data/it's here"]
ENV_KEYS = ["DOS_MULTIHOST", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "CUDA_VISIBLE_DEVICES",
            "XLA_PYTHON_CLIENT_PREALLOCATE"]

# A stand-in `python`: appends its argv, cwd and the launch-relevant environment to $RECORD as one JSON line.
_RECORDER = """import json, os, sys
keys = %r
with open(os.environ["RECORD"], "a") as f:
  f.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in keys}}) + "\\n")
""" % (ENV_KEYS,)

_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] || { echo "stand-in scontrol: unexpected $*" >&2; exit 1; }
printf 'node-a\\nnode-b\\n'
"""

# Starts SLURM_NTASKS copies of its command, as srun does, with per-task ids (2 tasks per node).
_SRUN = """#!/usr/bin/env bash
echo "$*" > "$RECORD.srun"
while [[ "$1" == --* ]]; do shift; done
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % 2)) "$@" || exit $?
done
"""

_GCLOUD = """#!/usr/bin/env bash
"$STAND_IN_PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" > "$RECORD.gcloud"
"""


def _write_exe(path, text):
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _stand_ins(tmp_path, python_name="python"):
  """(env, record path): PATH starts with the stand-ins; SLURM/JAX/DOS/TPU variables of this machine removed."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (tmp_path / "recorder.py").write_text(_RECORDER)
  _write_exe(bin_dir / python_name,
             f"#!/usr/bin/env bash\nexec {shlex.quote(sys.executable)} {shlex.quote(str(tmp_path / 'recorder.py'))} "
             '"$@"\n')
  _write_exe(bin_dir / "scontrol", _SCONTROL)
  _write_exe(bin_dir / "srun", _SRUN)
  _write_exe(bin_dir / "gcloud", _GCLOUD)
  record = tmp_path / "record.jsonl"
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "JAX_", "DOS_", "TPU_", "CUDA_VISIBLE", "XLA_PYTHON")) and k not in
         ("ZONE", "PROJECT", "REPO_DIR", "PYTHON")}
  env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", RECORD=str(record), STAND_IN_PYTHON=sys.executable)
  return env, record


def _records(record):
  with open(record) as f:
    return [json.loads(line) for line in f]


def _run(script, env, cwd=ROOT):
  return subprocess.run(["bash", os.path.join(ROOT, script), *ARGS], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=60)


def test_slurm_starts_one_process_per_task_with_its_ids_and_the_arguments_intact(tmp_path):
  env, record = _stand_ins(tmp_path)
  env.update(SLURM_JOB_NODELIST="node-[a-b]", SLURM_NTASKS="4", SLURM_SUBMIT_DIR=ROOT, DOS_COORDINATOR_PORT="2222")
  proc = _run("launch/slurm_gpu.sh", env)
  assert proc.returncode == 0, proc.stderr
  runs = _records(record)
  assert len(runs) == 4
  for i, run in enumerate(runs):
    assert run["argv"] == ["-m", "launch.train", *ARGS]
    assert run["cwd"] == ROOT
    assert run["env"] == {"DOS_MULTIHOST": "1", "JAX_COORDINATOR_ADDRESS": "node-a:2222", "JAX_NUM_PROCESSES": "4",
                          "JAX_PROCESS_ID": str(i), "CUDA_VISIBLE_DEVICES": str(i % 2),
                          "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
  assert "--kill-on-bad-exit=1" in (tmp_path / "record.jsonl.srun").read_text()


def test_slurm_passes_a_failing_exit_code_on(tmp_path):
  env, _ = _stand_ins(tmp_path)
  _write_exe(tmp_path / "bin" / "python", "#!/usr/bin/env bash\nexit 3\n")
  env.update(SLURM_JOB_NODELIST="node-a", SLURM_NTASKS="1", SLURM_SUBMIT_DIR=ROOT)
  assert _run("launch/slurm_gpu.sh", env).returncode == 3


def test_slurm_tasks_run_the_interpreter_named_by_PYTHON(tmp_path):
  env, record = _stand_ins(tmp_path, python_name="venv_python")  # `python` on PATH is not it
  _write_exe(tmp_path / "bin" / "python", "#!/usr/bin/env bash\nexit 3\n")
  env.update(SLURM_JOB_NODELIST="node-a", SLURM_NTASKS="2", SLURM_SUBMIT_DIR=ROOT,
             PYTHON=str(tmp_path / "bin" / "venv_python"))
  proc = _run("launch/slurm_gpu.sh", env)
  assert proc.returncode == 0, proc.stderr
  assert [r["argv"] for r in _records(record)] == [["-m", "launch.train", *ARGS]] * 2


def test_slurm_outside_an_allocation_or_the_repo_is_one_clear_error(tmp_path):
  env, record = _stand_ins(tmp_path)
  proc = _run("launch/slurm_gpu.sh", env)
  assert proc.returncode == 2 and "SLURM_JOB_NODELIST is not set" in proc.stderr and not record.exists()
  env.update(SLURM_JOB_NODELIST="node-a", SLURM_NTASKS="1", SLURM_SUBMIT_DIR=str(tmp_path))
  proc = _run("launch/slurm_gpu.sh", env, cwd=tmp_path)
  assert proc.returncode == 2 and "submit it from the repository root" in proc.stderr and not record.exists()


def _tpu_call(tmp_path):
  """The gcloud argv that tpu_pod.sh ran and the --command it hands to every worker."""
  argv = json.loads((tmp_path / "record.jsonl.gcloud").read_text())
  return argv, argv[argv.index("--command") + 1]


def test_tpu_pod_runs_the_same_command_on_every_worker_with_the_arguments_intact(tmp_path):
  env, record = _stand_ins(tmp_path, python_name="python3")
  env.update(TPU_NAME="my-v4-32", ZONE="us-central2-b", PROJECT="proj-1", REPO_DIR=ROOT, HOME=str(tmp_path))
  proc = _run("launch/tpu_pod.sh", env)
  assert proc.returncode == 0, proc.stderr
  argv, command = _tpu_call(tmp_path)
  assert argv[:5] == ["compute", "tpus", "tpu-vm", "ssh", "my-v4-32"]
  assert "--worker=all" in argv and "--project=proj-1" in argv and argv[argv.index("--zone") + 1] == "us-central2-b"
  assert "pip install" not in command
  # What each worker runs: that command through a shell, as ssh does.
  worker = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
  assert worker.returncode == 0, worker.stderr
  (run,) = _records(record)
  assert run["argv"] == ["-m", "launch.train", *ARGS] and run["cwd"] == ROOT
  assert run["env"]["DOS_MULTIHOST"] == "1"
  assert (tmp_path / "dos_train.log").exists()


def test_tpu_pod_worker_exit_code_survives_the_log_pipe(tmp_path):
  env, _ = _stand_ins(tmp_path, python_name="python3")
  _write_exe(tmp_path / "bin" / "python3", "#!/usr/bin/env bash\nexit 3\n")
  env.update(TPU_NAME="t", ZONE="z", REPO_DIR=ROOT, HOME=str(tmp_path), DOS_SETUP="1")
  assert _run("launch/tpu_pod.sh", env).returncode == 0
  _, command = _tpu_call(tmp_path)
  assert command.count("pip install -q -r requirements-tpu.txt") == 1
  command = command.replace("pip install -q -r requirements-tpu.txt", "true")  # no installs in a test
  assert subprocess.run(["bash", "-c", command], env=env, capture_output=True, timeout=60).returncode == 3


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE"])
def test_tpu_pod_names_a_missing_variable(tmp_path, missing):
  env, _ = _stand_ins(tmp_path, python_name="python3")
  env.update(TPU_NAME="t", ZONE="z")
  del env[missing]
  proc = _run("launch/tpu_pod.sh", env)
  assert proc.returncode != 0 and missing in proc.stderr and not (tmp_path / "record.jsonl.gcloud").exists()
