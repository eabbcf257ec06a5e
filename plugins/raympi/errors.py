"""Exceptions raised to the caller of an MPI task or actor."""


class MPIWorldError(RuntimeError):
    """The MPI world of a Ray task or actor failed; the message says which rank and why."""


class MPIWorldStartError(MPIWorldError):
    """The MPI world never started (no rank ran); the message says where and why."""


class MPIRankError(MPIWorldError):
    """An MPI rank raised, or exited before it finished."""

    def __init__(self, rank: int, host: str, pid: int, reason: str, traceback: str = ""):
        self.rank, self.host, self.pid, self.reason, self.traceback = rank, host, pid, reason, traceback
        message = f"MPI rank {rank} (pid {pid} on {host}) {reason}"
        super().__init__(f"{message}\n\n[rank {rank}] {traceback.rstrip()}" if traceback else message)

    def __reduce__(self):
        return type(self), (self.rank, self.host, self.pid, self.reason, self.traceback), self.__dict__
