import Foundation

extension Process {
    /// Starts the process so that it cannot outlive the test process: it is run through
    /// util-linux's `setpriv --pdeathsig KILL`, which asks the kernel to kill it when its parent
    /// goes, and then execs it (same pid, so ``processIdentifier`` and signals reach the program
    /// itself). A test process that crashes, or is killed, or whose output pipe closes, then
    /// leaves no served proxy behind; its `defer`s would not have run.
    ///
    /// The kernel's "parent" here is the *thread* that spawned the child, not the process, and
    /// the cooperative pool's threads come and go: the spawn is done on ``SpawningThread``, which
    /// lives as long as the test process.
    public func runTiedToTestProcess() throws {
        let setpriv = "/usr/bin/setpriv"
        guard let executable = self.executableURL, FileManager.default.isExecutableFile(atPath: setpriv) else {
            throw TiedProcessError(description: "\(setpriv) (util-linux) is needed to tie a child process to the test process")
        }
        self.arguments = ["--pdeathsig", "KILL", "--", executable.path] + (self.arguments ?? [])
        self.executableURL = URL(fileURLWithPath: setpriv)
        let process = UnsafeProcess(self)
        try SpawningThread.shared.perform { try process.value.run() }
    }
}

public struct TiedProcessError: Error, CustomStringConvertible {
    public var description: String
}

/// `Process` is not `Sendable`; handed to the spawning thread while its caller waits.
private struct UnsafeProcess: @unchecked Sendable {
    let value: Process
    init(_ value: Process) { self.value = value }
}

/// One thread that never ends, on which child processes are spawned (see
/// ``Foundation/Process/runTiedToTestProcess()``). Its caller waits: a spawn takes
/// milliseconds.
final class SpawningThread: @unchecked Sendable {
    static let shared = SpawningThread()

    private let condition = NSCondition()
    private var jobs: [Job] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                self.condition.lock()
                while self.jobs.isEmpty { self.condition.wait() }
                let job = self.jobs.removeFirst()
                self.condition.unlock()
                job.run()
            }
        }
        thread.name = "spawner"
        thread.start()
    }

    func perform(_ work: @escaping @Sendable () throws -> Void) throws {
        let job = Job(work)
        self.condition.lock()
        self.jobs.append(job)
        self.condition.signal()
        self.condition.unlock()
        job.done.wait()
        try job.outcome.get()
    }

    /// A spawn and its outcome, written on the spawning thread before `done` is signalled and
    /// read by the caller after it has waited for it.
    private final class Job: @unchecked Sendable {
        let work: @Sendable () throws -> Void
        let done = DispatchSemaphore(value: 0)
        var outcome: Result<Void, any Error> = .success(())
        init(_ work: @escaping @Sendable () throws -> Void) { self.work = work }
        func run() {
            self.outcome = Result { try self.work() }
            self.done.signal()
        }
    }
}
