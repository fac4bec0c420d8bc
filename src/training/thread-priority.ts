import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';

export type ThreadPriority = 'idle' | 'nice' | 'normal';

/**
 * Makes the calling thread (the training worker) yield the CPU to the event loop serving
 * predictions. Linux SCHED_IDLE first: such a thread runs only when no normal thread wants the
 * core and is preempted as soon as one wakes. Nice 19 alone is not enough: the scheduler may let
 * the niced thread finish its time slice first, which is about a millisecond of waiting for a
 * request that arrives meanwhile. Node has no call for scheduling policies, so the util-linux
 * `chrt` sets it for this thread's id; without it (or off Linux) the thread is niced instead.
 * Lowering one's own policy needs no privilege.
 */
export function lowerThreadPriority(): ThreadPriority {
  const tid = ownThreadId();
  if (tid !== undefined) {
    try {
      execFileSync('chrt', ['--idle', '--pid', '0', String(tid)], { stdio: 'ignore', timeout: 2000 });
      if (schedulingPolicy(tid) === SCHED_IDLE) return 'idle';
    } catch {
      /* no chrt, or refused: fall back to nice */
    }
  }
  try {
    // On Linux, priority is per thread: this nices only the calling thread.
    setPriority(19);
    return 'nice';
  } catch {
    return 'normal';
  }
}

/** The kernel's id for the calling thread, from /proc/thread-self (`<pid>/task/<tid>`); Linux only. */
function ownThreadId(): number | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    return Number.isInteger(tid) && tid > 0 ? tid : undefined;
  } catch {
    return undefined;
  }
}

const SCHED_IDLE = 5;

/** A thread's scheduling policy number (SCHED_OTHER 0 … SCHED_IDLE 5): field 41 of /proc/self/task/<tid>/stat. */
export function schedulingPolicy(tid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const policy = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
    return Number.isInteger(policy) ? policy : undefined;
  } catch {
    return undefined;
  }
}
