"""The parent<->child contract and the launcher's exit codes, defined once.

Everything the supervisor and the child must agree on lives here: the child's entry module, the
environment it is started with, the files it writes and the launcher's own exit statuses.
"""

from __future__ import annotations

# Launcher exit codes (README documents them).
EXIT_OK = 0  # trained to the end, or already finished
EXIT_BUG = 1  # a bug in the launcher itself
EXIT_BAD_INPUT = 2  # a file, field or option is wrong; nothing started
EXIT_EXHAUSTED = 3  # bottom of the ladder still failing, or the attempt budget spent
EXIT_FATAL = 4  # stopped on a failure that no rung can fix
EXIT_REQUEUED = 75  # stopped at a SLURM time limit or preemption; the job runs again (EX_TEMPFAIL)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# The child: `python -m launcher.child SPEC.json`; exits CHILD_OK when the model is trained and
# validated, CHILD_FAILED after writing report.json (or dies of a signal, with no report).
CHILD_MODULE = "launcher.child"
CHILD_OK = 0
CHILD_FAILED = 1
SPEC_NAME = "spec.json"
REPORT_NAME = "report.json"
HEARTBEAT_NAME = "heartbeat.json"
TRAIN_LOG_NAME = "train.log"

# Environment the child is started with; allocator settings only take effect if present before
# torch is imported, which is why training runs in a child at all.
ENV_ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
ENV_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The MobileNetV4 backbone loads timm's ImageNet weights only when this is "1".
ENV_PRETRAINED_BACKBONE = "RTDETR_LAUNCHER_PRETRAINED"

# Failure kinds (docs/design.md, "Failure kinds and policy").
CUDA_OOM = "cuda_oom"
HOST_OOM = "host_oom"
NCCL = "nccl"
HANG = "hang"
UNKNOWN = "unknown"
FATAL = "fatal"
INTERRUPTED = "interrupted"

GIB = 1024**3
