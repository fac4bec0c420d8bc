/** Status of a background job (retraining, audience scoring, re-scoring): one life cycle for all. */
export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

const TERMINAL: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'cancelled']);

/** Whether a job with this status has ended (it will not change again). */
export const isTerminal = (s: JobStatus) => TERMINAL.has(s);
