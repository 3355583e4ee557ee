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
  from measured samples.

Results per class: served/expired/rejected counts, latency percentiles of served rows (what a load
generator reports) and an effective p99 in which a row that missed its deadline counts at its timeout;
per pod: the time-averaged queue length (what the HPA's metric averages) and replica utilisation.
"""

from __future__ import annotations

import heapq
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


@dataclass
class _Row:
    __slots__ = ("arrival", "deadline", "klass", "pod", "state")
    arrival: float
    deadline: float
    klass: str
    pod: int
    state: int  # 0 queued, 1 in a batch, 2 done, 3 failed


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
    state = [_Pod(model) for _ in range(pods)]
    results = {name: ClassResult(name, timeout_s=spec.timeout_s) for name, spec in model.classes.items()}
    events: list[tuple[float, int, int, object]] = []  # (time, seq, kind, payload)
    seq = 0
    ARRIVAL, DEADLINE, WINDOW, DONE = 0, 1, 2, 3
    for time_s, klass in arrivals:
        events.append((time_s, seq, ARRIVAL, klass))
        seq += 1
    heapq.heapify(events)
    overhead = model.overhead_s
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
        if row.arrival >= warmup_s:
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
            pod.ewma_batch_s = service if not pod.ewma_batch_s else 0.8 * pod.ewma_batch_s + 0.2 * service
            pod.busy_s += service
            batches += 1
            batch_rows += len(rows)
            push(now + service, DONE, (pod_index, rows))

    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == ARRIVAL:
            klass = cast(str, payload)
            if routing == "random":
                pod_index = rng.randrange(pods) if pods > 1 else 0
            else:
                pod_index, next_pod = next_pod, (next_pod + 1) % pods
            pod = state[pod_index]
            spec = model.classes[klass]
            row = _Row(now, now + spec.timeout_s, klass, pod_index, 0)
            if now >= warmup_s:
                results[row.klass].arrived += 1
            if pod.size >= model.queue_capacity:
                lower = [name for name in reversed(pod.order) if pod.rank[name] > pod.rank[row.klass]]
                if sum(pod.live[name] for name in lower) < 1:
                    fail(row, expired=False)
                    continue
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
        else:
            pod_index, rows = cast(tuple[int, list[_Row]], payload)
            pod = state[pod_index]
            for row in rows:
                if row.state == 1:
                    row.state = 2
                    if row.arrival >= warmup_s:
                        result = results[row.klass]
                        result.served += 1
                        latency = now - row.arrival
                        if overhead:
                            latency += overhead[rng.randrange(len(overhead))]
                        result.latencies_s.append(latency)
            pod.free_slots += 1
            progress(pod_index, now)
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
