import Foundation

/// Blocking work (a child process's `waitpid`, key generation, `Process.waitUntilExit`) run
/// without holding one of Swift's cooperative threads. There are only as many of those as cores
/// (2 here), shared by every suite and every in-process proxy: a test that blocks one for
/// seconds stalls other tests' token refreshers and answers.
public enum Blocking {
    /// Runs `work` on a thread of its own; the caller's task is suspended, not blocked.
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
        }
    }
}

extension Process {
    /// The exit status once the process has exited, waiting at most `seconds`; a process still
    /// running then is killed (SIGKILL) and nil returned, so a child that hangs cannot hang the
    /// test that started it.
    public func exitStatus(within seconds: Double) async -> Int32? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while self.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        guard !self.isRunning else {
            kill(self.processIdentifier, SIGKILL)
            let process = UncheckedProcess(self)
            _ = try? await Blocking.run { process.value.waitUntilExit() }
            return nil
        }
        return self.terminationStatus
    }

    /// SIGTERM, then ``exitStatus(within:)``: the status of a graceful stop, nil if it took
    /// longer than `seconds` (and was killed).
    public func terminate(within seconds: Double) async -> Int32? {
        self.terminate()
        return await self.exitStatus(within: seconds)
    }
}

/// `Process` is not `Sendable`; handed to the thread that waits for it, and used by no one else
/// meanwhile.
private struct UncheckedProcess: @unchecked Sendable {
    let value: Process
    init(_ value: Process) { self.value = value }
}
