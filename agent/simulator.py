"""A discrete-event simulator of the gateway, for capacity planning.

It mirrors serving/queue.py and serving/batcher.py (it does not import them: the agent plans for gateways it
does not run) on a virtual clock:

- Arrivals: Poisson per SLA class, at constant or piecewise-constant (trace) rates; each request is one
  row. Pods sit behind a Service that routes each request to a pod at random (kube-proxy) or round robin.
- Queue, one per pod, bounded at `queue_capacity` rows. Rows of a class are FIFO; classes are served by
  smooth weighted round robin over the non-empty ones (`weight`), a class that empties loses its credit.
  When the queue is full, an arrival evicts the newest rows of strictly lower classes (they fail as
  queue_full), else it is refused.
- Deadlines: a row not answered by arrival + `timeout_ms` fails at its deadline (the gateway's per-request
  timer); if it is still queued it leaves the queue then.
- Batcher: one slot per engine replica; only while holding a free slot does it wait for a first row, then
  (dynamic) until `max_batch_size` rows are queued or the oldest queued row has waited `max_wait_ms`, and
  cuts `max_batch_size` rows if that many are queued, else the largest preferred size available, else all;
  (static) until a full batch or the earliest queued deadline minus max(2 x EWMA batch time, 10 ms). A batch
  holds its replica for a service time drawn from the curve for its size; its rows finish together.
- Latency of a served row = (finish - arrival) + an optional per-request overhead (HTTP, client) drawn
  from measured samples. Beside it, the gateway's own time per row (what its Server-Timing header reports,
  serving/timing.py): from when its event loop takes the request up (with a host model; else from the
  queue) to when the answer leaves the loop, plus optional samples of the gateway's unexplained time.
- Host (optional, `HostModel`): the CPU work around the engine. Each request passes, in order, the client's
  event loop (send), the pod's event loop (HTTP parse, JSON, tokenisation) before it is queued, and after its
  batch the pod's event loop again (response) and the client's (receive). A batch's own Python work in the
  gateway (`engine_gil_s`) needs the interpreter lock the loop holds, so it runs on the loop too, next in
  line after the running job; the engine's slot is held until it is done. When the engine's thread shares
  the loop's process (`gil_switch_s`, the interpreter's switch interval), it needs the lock to start a batch
  too, and a busy loop keeps it until it has run everything queued (it then waits for I/O) or the switch
  interval forces it off: the batch starts after the loop drains, at most that late. Event loops are single-threaded:
  each is a FIFO station of one server. The host's cores are shared (processor sharing): while more work
  runs than there are cores (loop segments, the engine's threads, measured background load) everything running
  progresses slower in proportion, and a job's finish moves whenever another starts or ends; work that runs
  beside other work takes `contention` times longer (cores that share an SMT core, caches or a hypervisor slow each other
  before they run out; measured with a core-hog beside the engine). Latency then runs from the client's
  send; the gateway's deadline timer starts when the request reaches its queue.

Results per class: served/expired/rejected counts, latency percentiles of served rows (what a load
generator reports) and an effective p99 in which a row that missed its deadline counts at its timeout;
per pod: the time-averaged queue length (what the HPA's metric averages) and replica utilisation.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np

from agent.capacity import ServiceCurve
from infopt.params import BatchingParams, SlaClass

STATIC_MARGIN_S = 0.01  # serving/batcher.py: a static batch flushes at least this long before a deadline


@dataclass(frozen=True)
class ClassSpec:
    name: str
    priority: int  # lower is served first
    weight: int
    timeout_s: float
    p99_sla_s: float | None = None


@dataclass(frozen=True)
class BatchingSpec:
    mode: Literal["dynamic", "static"] = "dynamic"
    max_batch_size: int = 16
    max_wait_s: float = 0.005
    preferred_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class GatewayModel:
    """One deployment as the simulator sees it."""

    classes: Mapping[str, ClassSpec]
    batching: BatchingSpec
    curve: ServiceCurve
    queue_capacity: int = 512
    engine_replicas: int = 1  # in-process engine instances per pod (batcher slots)
    overhead_s: tuple[float, ...] = ()  # per-request overhead samples (seconds); empty: none
    gateway_overhead_s: tuple[float, ...] = ()  # samples added to the gateway's own time per row; empty: none
    host: HostModel | None = None  # the CPU work around the engine; None: only the engine takes time


@dataclass(frozen=True)
class HostModel:
    """CPU seconds per request on each event loop, and the cores everything shares (see the module docstring).

    Measured, not fitted: a benchmark reads them from single requests (process CPU time per request, minus the
    engine's) and the host's background load from /proc/stat."""

    cores: float
    loop_in_s: float  # the pod's event loop, before the request is queued
    loop_out_s: float  # the pod's event loop, after its batch
    client_send_s: float = 0.0  # a load generator on the same host (0: the client is elsewhere)
    client_receive_s: float = 0.0
    engine_cores: float = 1.0  # cores a running batch keeps busy (its intra-op threads)
    background_cores: float = 0.0  # other work on the host
    contention: float = 1.0  # how much slower work runs while other work shares the host (SMT, caches)
    engine_gil_s: float = 0.0  # per batch: the gateway's Python work around the engine (collate, handing the
    # result back), which holds the interpreter lock the event loop needs: run on the loop after the engine
    gil_switch_s: float = 0.0  # the interpreter's switch interval (sys.getswitchinterval()) when the engine's
    # thread shares the loop's process: the thread needs the lock to start a batch, and a busy loop only lets it
    # go when it has nothing left to run (it then waits for I/O) or when this interval forces a switch. 0: the
    # engine starts at once (another process, or no interpreter lock)

    def __post_init__(self) -> None:
        if self.cores <= 0:
            raise ValueError(f"host cores is {self.cores}; must be > 0")
        for name in (
            "loop_in_s",
            "loop_out_s",
            "client_send_s",
            "client_receive_s",
            "engine_cores",
            "engine_gil_s",
            "gil_switch_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"host {name} is {getattr(self, name)}; must be >= 0")
        if self.contention < 1:
            raise ValueError(f"host contention is {self.contention}; must be >= 1 (a slowdown factor)")


@dataclass
class _Row:
    __slots__ = ("arrival", "deadline", "klass", "pod", "received", "sent", "state")
    arrival: float  # when it reached the pod's queue
    deadline: float
    klass: str
    pod: int
    state: int  # 0 queued, 1 in a batch, 2 done, 3 failed, 4 on its way to the queue (host model)
    sent: float  # when the client sent it (= arrival without a host model)
    received: float  # when the pod's event loop took it up (= arrival without a host model)


@dataclass
class _Batch:
    __slots__ = ("pod", "rows")
    pod: int
    rows: list[_Row]


class _Station:
    """One single-threaded event loop: jobs in FIFO order, one at a time (a batch's interpreter-lock work
    goes ahead of the queued requests, after the running job: the lock is handed over, not preempted)."""

    __slots__ = ("busy", "jobs")

    def __init__(self) -> None:
        self.jobs: deque[tuple[_Row | _Batch, str]] = deque()  # (row or batch, phase), the running one first
        self.busy = False


class _CpuJob:
    """Work on a pod's host: an event loop's running segment (`station` its index) or an engine batch (`rows`)."""

    __slots__ = ("demand", "ends", "pod", "remaining", "rows", "started", "station", "version")

    def __init__(self, pod: int, work_s: float, demand: float, now: float, station: int = -1) -> None:
        self.pod = pod
        self.remaining = work_s  # seconds it would still take alone on the host
        self.demand = demand  # cores it keeps busy while it runs (a loop 1, a batch its intra-op threads)
        self.station = station  # the event loop it runs on; -1: an engine batch
        self.rows: list[_Row] = []
        self.started = now
        self.ends = now  # its finish at the current rates (rescheduled whenever what runs beside it changes)
        self.version = 0  # finish events of older versions are stale


class _Cpu:
    """The cores of one pod's host under processor sharing: everything running progresses at once, each job
    slowed by what runs beyond the cores (total demand / cores) and by the contention penalty in proportion to
    what runs beside it (up to one core's worth), and a job's finish moves whenever another starts or ends: a
    0.4 ms loop segment beside a 12 ms batch on one core delays the batch by about 0.4 ms, not by 12."""

    __slots__ = ("background", "contention", "cores", "jobs", "last")

    def __init__(self, host: HostModel) -> None:
        self.cores = host.cores
        self.background = host.background_cores
        self.contention = host.contention
        self.jobs: list[_CpuJob] = []
        self.last = 0.0

    def _slowdown(self, job: _CpuJob, total: float) -> float:
        beside = min(1.0, max(0.0, total - job.demand))
        return max(1.0, total / self.cores) * (1.0 + (self.contention - 1.0) * beside)

    def _advance(self, now: float) -> None:
        elapsed = now - self.last
        if elapsed > 0 and self.jobs:
            total = self.background + sum(job.demand for job in self.jobs)
            for job in self.jobs:
                job.remaining = max(0.0, job.remaining - elapsed / self._slowdown(job, total))
        self.last = now

    def change(self, now: float, add: _CpuJob | None = None, remove: _CpuJob | None = None) -> list[_CpuJob]:
        """Start and/or end a job at `now`; the running jobs with their new finish times (`ends`, `version`)."""
        self._advance(now)
        if remove is not None:
            self.jobs.remove(remove)
        if add is not None:
            self.jobs.append(add)
        total = self.background + sum(job.demand for job in self.jobs)
        for job in self.jobs:
            job.ends = now + job.remaining * self._slowdown(job, total)
            job.version += 1
        return self.jobs


class _Pod:
    def __init__(self, model: GatewayModel) -> None:
        order = sorted(model.classes.values(), key=lambda spec: spec.priority)
        self.order = [spec.name for spec in order]
        self.rank = {name: index for index, name in enumerate(self.order)}
        self.weight = {spec.name: spec.weight for spec in order}
        self.items: dict[str, deque[_Row]] = {name: deque() for name in self.order}
        self.live = dict.fromkeys(self.order, 0)
        self.credit = dict.fromkeys(self.order, 0)
        self.size = 0
        self.free_slots = model.engine_replicas
        self.state = "need_slot"  # need_slot | need_row | window
        self.window_token = 0
        self.window_until = 0.0
        self.ewma_batch_s = 0.0
        self.queue_area = 0.0  # integral of queue length over time
        self.last_change = 0.0
        self.busy_s = 0.0

    def account(self, now: float) -> None:
        self.queue_area += self.size * (now - self.last_change)
        self.last_change = now

    def unlink(self, row: _Row, now: float) -> None:
        self.account(now)
        self.live[row.klass] -= 1
        self.size -= 1
        if self.live[row.klass] == 0:
            self.credit[row.klass] = 0

    def head(self, name: str) -> _Row | None:
        items = self.items[name]
        while items and items[0].state != 0:
            items.popleft()
        return items[0] if items else None

    def take(self, count: int, now: float) -> list[_Row]:
        """serving/queue.py RequestQueue.take: smooth weighted round robin over classes with live rows."""
        batch: list[_Row] = []
        while len(batch) < count:
            candidates = [name for name in self.order if self.head(name) is not None]
            if not candidates:
                break
            if len(candidates) == 1:
                name = candidates[0]
                while len(batch) < count and self.head(name) is not None:
                    row = self.items[name].popleft()
                    self.unlink(row, now)
                    row.state = 1
                    batch.append(row)
                break
            total = 0
            for name in candidates:
                self.credit[name] += self.weight[name]
                total += self.weight[name]
            chosen = max(candidates, key=self.credit.__getitem__)
            self.credit[chosen] -= total
            row = self.items[chosen].popleft()
            self.unlink(row, now)
            row.state = 1
            batch.append(row)
        return batch


@dataclass
class ClassResult:
    name: str
    arrived: int = 0
    served: int = 0
    expired: int = 0
    rejected: int = 0
    latencies_s: list[float] = field(default_factory=list, repr=False)
    gateway_latencies_s: list[float] = field(default_factory=list, repr=False)  # the gateway's own time
    timeout_s: float = 0.0

    @property
    def failed(self) -> int:
        return self.expired + self.rejected

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.arrived if self.arrived else 0.0

    def percentile_ms(self, q: float) -> float | None:
        """Percentile of served rows' latency (what a load generator reports for 200s)."""
        if not self.latencies_s:
            return None
        return float(np.percentile(np.asarray(self.latencies_s), q)) * 1000.0

    def gateway_percentile_ms(self, q: float) -> float | None:
        """Percentile of served rows' time inside the gateway (what its Server-Timing header reports)."""
        if not self.gateway_latencies_s:
            return None
        return float(np.percentile(np.asarray(self.gateway_latencies_s), q)) * 1000.0

    def effective_p99_ms(self) -> float:
        """p99 over every arrival, a row past its deadline counted at its timeout and a refused one as never
        answered (infinite): what a client sees, and what an SLA is about."""
        if not self.arrived:
            return 0.0
        if self.rejected / self.arrived > 0.01:
            return math.inf
        values = np.asarray(self.latencies_s + [self.timeout_s] * self.expired + [math.inf] * self.rejected)
        return float(np.percentile(values, 99, method="higher")) * 1000.0


@dataclass
class SimResult:
    duration_s: float
    pods: int
    classes: dict[str, ClassResult]
    mean_queue_per_pod: float  # time average over the measured window
    utilization: float  # share of replica time spent in batches
    batches: int
    mean_batch_size: float

    @property
    def arrived(self) -> int:
        return sum(c.arrived for c in self.classes.values())

    def meets(self, classes: Mapping[str, ClassSpec], max_failed_fraction: float = 0.01) -> bool:
        """Every class within its p99 SLA (effective p99) and failure budget."""
        for name, result in self.classes.items():
            if not result.arrived:
                continue
            if result.failed_fraction > max_failed_fraction:
                return False
            sla = classes[name].p99_sla_s
            if sla is not None and result.effective_p99_ms() > sla * 1000.0:
                return False
        return True


def cut_size(available: int, batching: BatchingSpec) -> int:
    """serving/batcher.py cut_size."""
    if available >= batching.max_batch_size:
        return batching.max_batch_size
    fitting = [size for size in batching.preferred_batch_sizes if size <= available]
    return max(fitting) if fitting else available


def poisson_arrivals(
    rates: Sequence[Mapping[str, float]], step_s: float, rng: random.Random
) -> list[tuple[float, str]]:
    """Arrival times and classes for piecewise-constant rates: `rates[i]` (req/s per class) holds over
    [i*step_s, (i+1)*step_s). Superposed Poisson streams: total rate, each arrival's class by its share."""
    arrivals: list[tuple[float, str]] = []
    for index, step in enumerate(rates):
        names = [name for name, rate in step.items() if rate > 0]
        total = sum(step[name] for name in names)
        if total <= 0:
            continue
        cumulative = np.cumsum([step[name] / total for name in names]).tolist()
        start, end = index * step_s, (index + 1) * step_s
        now = start + rng.expovariate(total)
        while now < end:
            pick = rng.random()
            klass = names[next((i for i, edge in enumerate(cumulative) if pick < edge), len(names) - 1)]
            arrivals.append((now, klass))
            now += rng.expovariate(total)
    return arrivals


def simulate(
    model: GatewayModel,
    arrivals: Sequence[tuple[float, str]],
    *,
    pods: int = 1,
    routing: Literal["random", "round_robin"] = "random",
    seed: int = 0,
    warmup_s: float = 0.0,
) -> SimResult:
    """Run the arrivals through `pods` gateways; rows arriving before `warmup_s` are served but not counted."""
    if pods < 1:
        raise ValueError(f"pods is {pods}; must be >= 1")
    unknown = {klass for _, klass in arrivals} - set(model.classes)
    if unknown:
        raise ValueError(f"arrivals of unknown SLA classes {sorted(unknown)}; the model has {sorted(model.classes)}")
    rng = random.Random(seed)
    batching = model.batching
    host = model.host
    if host is not None and pods > 1 and (host.client_send_s or host.client_receive_s):
        raise ValueError("a client on the gateway's host (client_send_s/client_receive_s) models one pod, not several")
    stations = [_Station() for _ in range(pods + 1)]  # 0: the client's event loop; 1 + i: pod i's
    cpus = [_Cpu(host) for _ in range(pods)] if host is not None else []  # the client shares pod 0's host
    running: list[_CpuJob | None] = [None] * (pods + 1)  # each event loop's segment on its host's cores
    state = [_Pod(model) for _ in range(pods)]
    results = {name: ClassResult(name, timeout_s=spec.timeout_s) for name, spec in model.classes.items()}
    events: list[tuple[float, int, int, object]] = []  # (time, seq, kind, payload)
    seq = 0
    ARRIVAL, DEADLINE, WINDOW, DONE, CPU, READY = 0, 1, 2, 3, 4, 5
    for time_s, klass in arrivals:
        events.append((time_s, seq, ARRIVAL, klass))
        seq += 1
    heapq.heapify(events)
    overhead = model.overhead_s
    gateway_overhead = model.gateway_overhead_s
    end_time = arrivals[-1][0] if arrivals else 0.0
    batches = 0
    batch_rows = 0
    next_pod = 0

    def push(time_s: float, kind: int, payload: object) -> None:
        nonlocal seq
        heapq.heappush(events, (time_s, seq, kind, payload))
        seq += 1

    def fail(row: _Row, expired: bool) -> None:
        row.state = 3
        if row.sent >= warmup_s:
            result = results[row.klass]
            if expired:
                result.expired += 1
            else:
                result.rejected += 1

    def progress(pod_index: int, now: float) -> None:
        """The batcher loop of one pod (serving/batcher.py Batcher._run), advanced as far as it goes at `now`."""
        nonlocal batches, batch_rows
        pod = state[pod_index]
        while True:
            if pod.state == "need_slot":
                if pod.free_slots == 0:
                    return
                pod.free_slots -= 1
                pod.state = "need_row"
            if pod.state == "need_row":
                if pod.size == 0:
                    return
                heads = [row for name in pod.order if (row := pod.head(name)) is not None]
                if batching.mode == "dynamic":
                    pod.window_until = min(row.arrival for row in heads) + batching.max_wait_s
                else:
                    pod.window_until = min(row.deadline for row in heads) - max(2 * pod.ewma_batch_s, STATIC_MARGIN_S)
                pod.state = "window"
                pod.window_token += 1
                if pod.size < batching.max_batch_size and now < pod.window_until:
                    push(pod.window_until, WINDOW, (pod_index, pod.window_token))
                    return
            elif pod.size < batching.max_batch_size and now < pod.window_until:  # window open, still filling
                return
            count = cut_size(pod.size, batching) if batching.mode == "dynamic" else batching.max_batch_size
            rows = pod.take(count, now)
            pod.window_token += 1  # a pending window event is stale now
            pod.state = "need_slot"
            if not rows:
                pod.free_slots += 1
                continue
            service = model.curve.sample(len(rows), rng)
            batches += 1
            batch_rows += len(rows)
            if host is None:
                batch_ended(pod_index, service)
                push(now + service, DONE, (pod_index, rows))
                continue
            batch = _CpuJob(pod_index, service, host.engine_cores, now)
            batch.rows = rows
            # the engine's thread waits for the interpreter lock: the loop drains, or a switch interval passes
            wait = min(drain_s(1 + pod_index, now), host.gil_switch_s) if host.gil_switch_s > 0 else 0.0
            if wait > 0:
                push(now + wait, READY, batch)
            else:
                schedule(cpus[pod_index].change(now, add=batch))

    def batch_ended(pod_index: int, took_s: float) -> None:
        """The batcher's EWMA of batch time (static windows) and the engine's busy time, from a batch's duration."""
        pod = state[pod_index]
        pod.ewma_batch_s = took_s if not pod.ewma_batch_s else 0.8 * pod.ewma_batch_s + 0.2 * took_s
        pod.busy_s += took_s

    def schedule(jobs: list[_CpuJob]) -> None:
        for job in jobs:
            push(job.ends, CPU, (job, job.version))

    def drain_s(index: int, now: float) -> float:
        """How long the event loop `index` keeps running before it has nothing left (its nominal job times)."""
        station, segment = stations[index], running[index]
        if not station.busy or segment is None:
            return 0.0
        queued = sum(station_time(phase) for _, phase in itertools.islice(station.jobs, 1, None))
        return max(0.0, segment.ends - now) + queued

    def station_time(phase: str) -> float:
        assert host is not None
        return {
            "send": host.client_send_s,
            "in": host.loop_in_s,
            "out": host.loop_out_s,
            "receive": host.client_receive_s,
            "gil": host.engine_gil_s,
        }[phase]

    def submit(row: _Row, phase: str, now: float) -> None:
        """Hand the row to the event loop of `phase` (send/receive: the client's; in/out: its pod's); a phase
        that takes no time is not a visit: the row goes straight on."""
        if station_time(phase) <= 0:
            after(row, phase, now)
            return
        index = 0 if phase in ("send", "receive") else 1 + row.pod
        station = stations[index]
        station.jobs.append((row, phase))
        if not station.busy:
            start(index, now)

    def after(row: _Row, phase: str, now: float) -> None:
        """Where a row goes once `phase` is done: send -> in -> the queue; (its batch) out -> receive -> answered."""
        if phase == "send":
            submit(row, "in", now)
        elif phase == "in":
            enqueue(row, now)
        elif phase == "out":
            answered_by_gateway(row, now)
            submit(row, "receive", now)
        else:
            answer(row, now)

    def start(index: int, now: float) -> None:
        station = stations[index]
        job, phase = station.jobs[0]
        station.busy = True
        if isinstance(job, _Row):
            if phase == "send":
                job.sent = now  # a client times a request from when its loop starts sending it
            elif phase == "in":
                job.received = now  # the gateway times it from when its loop takes it up
        segment = _CpuJob(job.pod, station_time(phase), 1.0, now, station=index)
        running[index] = segment
        schedule(cpus[job.pod].change(now, add=segment))

    def finish_batch(pod_index: int, rows: list[_Row], now: float) -> None:
        """The batch's future resolves: its rows are answered (or, with a host, go back through the loops)."""
        for row in rows:
            if row.state == 1:
                row.state = 2
                if host is None:
                    answered_by_gateway(row, now)
                    answer(row, now)
                else:
                    submit(row, "out", now)
        state[pod_index].free_slots += 1
        progress(pod_index, now)

    def answered_by_gateway(row: _Row, now: float) -> None:
        if row.sent >= warmup_s:
            latency = now - row.received
            if gateway_overhead:
                latency += gateway_overhead[rng.randrange(len(gateway_overhead))]
            results[row.klass].gateway_latencies_s.append(latency)

    def answer(row: _Row, now: float) -> None:
        if row.sent >= warmup_s:
            result = results[row.klass]
            result.served += 1
            latency = now - row.sent
            if overhead:
                latency += overhead[rng.randrange(len(overhead))]
            result.latencies_s.append(latency)

    def enqueue(row: _Row, now: float) -> None:
        """The request reaches its pod's queue: admitted (evicting lower classes when full) or refused."""
        pod_index = row.pod
        pod = state[pod_index]
        row.arrival, row.deadline, row.state = now, now + model.classes[row.klass].timeout_s, 0
        if pod.size >= model.queue_capacity:
            lower = [name for name in reversed(pod.order) if pod.rank[name] > pod.rank[row.klass]]
            if sum(pod.live[name] for name in lower) < 1:
                fail(row, expired=False)
                return
            for name in lower:  # evict the newest row of the lowest class that has one
                items = pod.items[name]
                victim = None
                while items and victim is None:
                    candidate = items.pop()
                    if candidate.state == 0:
                        victim = candidate
                if victim is not None:
                    pod.unlink(victim, now)
                    fail(victim, expired=False)
                    break
        pod.account(now)
        pod.items[row.klass].append(row)
        pod.live[row.klass] += 1
        pod.size += 1
        push(row.deadline, DEADLINE, row)
        progress(pod_index, now)

    def station_done(index: int, now: float) -> None:
        """The event loop `index` finished its running job: it takes up the next; the job goes on."""
        station = stations[index]
        done, phase = station.jobs.popleft()
        station.busy = False
        if station.jobs:
            start(index, now)
        if isinstance(done, _Batch):
            finish_batch(done.pod, done.rows, now)
        else:
            after(done, phase, now)

    def batch_done(pod_index: int, rows: list[_Row], now: float) -> None:
        """The engine returned: the batch's Python work in the gateway runs on the loop, next after its running
        job (it holds the slot meanwhile), or the batch's rows are answered at once."""
        assert host is not None
        if host.engine_gil_s > 0:
            station = stations[1 + pod_index]
            station.jobs.insert(1 if station.busy else 0, (_Batch(pod_index, rows), "gil"))
            if not station.busy:
                start(1 + pod_index, now)
        else:
            finish_batch(pod_index, rows, now)

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == ARRIVAL:
            klass = cast(str, payload)
            if routing == "random":
                pod_index = rng.randrange(pods) if pods > 1 else 0
            else:
                pod_index, next_pod = next_pod, (next_pod + 1) % pods
            row = _Row(now, now, klass, pod_index, 4, now, now)
            if now >= warmup_s:
                results[row.klass].arrived += 1
            if host is None:
                enqueue(row, now)
            else:
                submit(row, "send", now)
        elif kind == CPU:
            job, version = cast(tuple[_CpuJob, int], payload)
            if version != job.version:
                continue  # its finish moved since: a later event of it stands
            schedule(cpus[job.pod].change(now, remove=job))
            if job.station >= 0:
                running[job.station] = None
                station_done(job.station, now)
            else:
                batch_ended(job.pod, now - job.started)
                batch_done(job.pod, job.rows, now)
        elif kind == READY:
            batch = cast(_CpuJob, payload)
            schedule(cpus[batch.pod].change(now, add=batch))
        elif kind == DEADLINE:
            row = cast(_Row, payload)
            if row.state == 0:
                state[row.pod].unlink(row, now)
                fail(row, expired=True)
            elif row.state == 1:
                fail(row, expired=True)  # its batch is still running: the client got a 503 at the deadline
            else:
                continue  # answered in time: this timer was cancelled
        elif kind == WINDOW:
            pod_index, token = cast(tuple[int, int], payload)
            pod = state[pod_index]
            if state[pod_index].state == "window" and state[pod_index].window_token == token:
                progress(pod_index, now)
        else:  # DONE: a batch of the engine-only model
            pod_index, rows = cast(tuple[int, list[_Row]], payload)
            finish_batch(pod_index, rows, now)
        end_time = max(end_time, now)

    for pod in state:
        pod.account(end_time)
    span = max(end_time, 1e-9)
    return SimResult(
        duration_s=end_time,
        pods=pods,
        classes=results,
        mean_queue_per_pod=sum(pod.queue_area for pod in state) / pods / span,
        utilization=sum(pod.busy_s for pod in state) / (pods * model.engine_replicas * span),
        batches=batches,
        mean_batch_size=batch_rows / batches if batches else 0.0,
    )


def class_specs(sla_classes: Mapping[str, SlaClass], only: Sequence[str] | None = None) -> dict[str, ClassSpec]:
    """The simulator's view of params.sla_classes (all of them: the gateway's queue holds every class)."""
    return {
        name: ClassSpec(
            name=name,
            priority=sla.priority,
            weight=sla.weight,
            timeout_s=sla.timeout_ms / 1000.0,
            p99_sla_s=None if sla.p99_ms is None else sla.p99_ms / 1000.0,
        )
        for name, sla in sla_classes.items()
        if only is None or name in only
    }


def batching_spec(batching: BatchingParams) -> BatchingSpec:
    return BatchingSpec(
        mode=batching.mode,
        max_batch_size=batching.max_batch_size,
        max_wait_s=batching.max_wait_ms / 1000.0,
        preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
    )
