"""A Kubernetes API emulated at the client boundary, as dagster-k8s's own tests fake it: a `CoreV1Api`
stand-in that answers with real `kubernetes.client.models` objects.

Creating a pod starts its first container's command as a local process with the pod's environment
(plain values, and Secrets resolved from `secrets` through `valueFrom.secretKeyRef`, as the kubelet
does); the pod's status follows the process; `read_namespaced_pod_log(follow=True, timestamps=True)`
streams the container's output (stdout and stderr, as `kubectl logs`) with strictly increasing RFC 3339
timestamps. The "image" is this machine's Python environment: PATH, PYTHONPATH and the hub-offline
switches of the test process are added to the pod's environment. Volumes are this machine's paths (the
profile mounts the storage root at the same path in every pod, so the paths agree).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import kubernetes
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateTerminated,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodList,
    V1PodStatus,
)

IMAGE_ENV = ("PATH", "PYTHONPATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass
class EmulatedPod:
    body: V1Pod
    proc: subprocess.Popen
    env: dict[str, str]
    lines: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, line)
    done: threading.Event = field(default_factory=threading.Event)
    killed: bool = False
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


class _LogResponse:
    def __init__(self, data: bytes):
        self.data = data


class EmulatedCoreV1Api:
    """The CoreV1Api calls PipesK8sClient and DagsterKubernetesClient make, against local processes."""

    def __init__(
        self,
        secrets: dict[tuple[str, str], dict[str, str]] | None = None,
        kill_when: Callable[[str], bool] | None = None,
    ):
        self.secrets = secrets or {}
        self.kill_when = kill_when
        self.pods: dict[tuple[str, str], EmulatedPod] = {}
        self.created: list[V1Pod] = []
        self.deleted: list[str] = []
        self._clock = dt.datetime.now(dt.UTC)
        self._lock = threading.Lock()

    # -- the API ---------------------------------------------------------------------------------------

    def create_namespaced_pod(self, namespace: str, body: V1Pod) -> V1Pod:
        assert isinstance(body, V1Pod), "PipesK8sClient sends a kubernetes.client V1Pod"
        container = body.spec.containers[0]
        env = {k: os.environ[k] for k in IMAGE_ENV if k in os.environ}
        for var in container.env or []:
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                data = self.secrets.get((namespace, ref.name), {})
                if ref.key not in data:
                    if ref.optional:
                        continue
                    raise kubernetes.client.ApiException(status=400, reason=f"secret {ref.name} missing")
                env[var.name] = data[ref.key]
            else:
                env[var.name] = var.value
        proc = subprocess.Popen(
            list(container.command) + list(container.args or []),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        pod = EmulatedPod(body=body, proc=proc, env=env)
        self.pods[(namespace, body.metadata.name)] = pod
        self.created.append(body)
        threading.Thread(target=self._pump, args=(pod,), daemon=True).start()
        return body

    def list_namespaced_pod(self, namespace: str, field_selector: str = "", **_) -> V1PodList:
        name = field_selector.removeprefix("metadata.name=")
        pod = self.pods.get((namespace, name))
        return V1PodList(items=[self._status(pod)] if pod else [])

    def read_namespaced_pod(self, name: str, namespace: str, **_) -> V1Pod:
        return self._status(self.pods[(namespace, name)])

    def read_namespaced_pod_log(
        self, name: str, namespace: str, follow: bool = False, timestamps: bool = False, **kwargs
    ):
        pod = self.pods[(namespace, name)]
        if follow:
            return self._follow(pod, timestamps)
        tail = kwargs.get("tail_lines")
        lines = pod.lines[-tail:] if tail else pod.lines
        text = "".join((f"{ts} {line}" if timestamps else line) + "\n" for ts, line in lines)
        return _LogResponse(text.encode("utf-8"))

    def delete_namespaced_pod(self, name: str, namespace: str, **_) -> None:
        pod = self.pods.pop((namespace, name), None)
        if pod is not None and pod.proc.poll() is None:
            pod.proc.kill()
            pod.proc.wait()
        self.deleted.append(name)

    # -- the emulation ---------------------------------------------------------------------------------

    def evict(self, pod: EmulatedPod) -> None:
        """The node kills the container without warning (SIGKILL; OOM kill, node loss)."""
        pod.killed = True
        if pod.proc.poll() is None:
            pod.proc.send_signal(signal.SIGKILL)

    def _timestamp(self) -> str:
        with self._lock:
            now = dt.datetime.now(dt.UTC)
            self._clock = max(now, self._clock + dt.timedelta(microseconds=1))
            return self._clock.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"

    def _pump(self, pod: EmulatedPod) -> None:
        assert pod.proc.stdout is not None
        for raw in iter(pod.proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            pod.lines.append((self._timestamp(), line))
            if self.kill_when is not None and not pod.killed and self.kill_when(line):
                self.evict(pod)
        pod.proc.wait()
        pod.done.set()

    def _follow(self, pod: EmulatedPod, timestamps: bool) -> Iterator[bytes]:
        sent = 0
        while True:
            finished = pod.done.is_set()
            while sent < len(pod.lines):
                ts, line = pod.lines[sent]
                sent += 1
                yield ((f"{ts} " if timestamps else "") + line + "\n").encode("utf-8")
            if finished:
                return
            time.sleep(0.02)

    def _status(self, pod: EmulatedPod) -> V1Pod:
        container = pod.body.spec.containers[0]
        code = pod.proc.poll() if pod.done.is_set() else None
        if code is None:
            state = V1ContainerState(running=V1ContainerStateRunning(started_at=pod.started))
            phase, ready = "Running", True
        else:
            exit_code = 128 + -code if code < 0 else code
            reason = "Completed" if exit_code == 0 else ("Error" if not pod.killed else "Killed")
            state = V1ContainerState(
                terminated=V1ContainerStateTerminated(
                    exit_code=exit_code,
                    reason=reason,
                    started_at=pod.started,
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )
            phase, ready = ("Succeeded" if exit_code == 0 else "Failed"), False
        status = V1ContainerStatus(
            name=container.name,
            image=container.image,
            image_id=f"emulated://{container.image}",
            ready=ready,
            restart_count=0,
            state=state,
        )
        return V1Pod(
            metadata=V1ObjectMeta(name=pod.body.metadata.name, labels=pod.body.metadata.labels),
            spec=pod.body.spec,
            status=V1PodStatus(phase=phase, container_statuses=[status]),
        )
