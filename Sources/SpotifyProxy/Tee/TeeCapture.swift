import Foundation
import NIOCore
import Synchronization

/// The tee's copy of one response body, taken chunk by chunk as the body streams to the client.
///
/// When the same resource's body was extracted moments before (``RecentBodies``), chunks are
/// compared with it instead of kept: an identical answer — a hot artist, a retried page — costs
/// a memcmp and holds no memory; at the first difference the matched prefix is taken from the
/// recent body, so the copy is complete either way. Pure: no locks, no I/O.
///
/// Each body is compared with a recent one at most once: here, while it streams, when a recent
/// body existed as it started (``comparedWithRecent``); otherwise by the tee's extraction, which
/// has the body whole by then.
public struct TeeCapture: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// Byte for byte the recent body: nothing new to extract.
        case identical
        case body([ByteBuffer])
    }

    private var chunks: [ByteBuffer] = []
    private var reference: ByteBuffer?
    private var matched = 0
    /// Bytes seen so far.
    public private(set) var bytes = 0
    /// Whether this body is compared with a recent one (one existed when it started): if so, an
    /// outcome of ``Outcome/body(_:)`` means it differs, and it is not compared again.
    public let comparedWithRecent: Bool

    public init(recent: ByteBuffer?) {
        self.reference = recent
        self.comparedWithRecent = recent != nil
    }

    public mutating func append(_ chunk: ByteBuffer) {
        self.bytes += chunk.readableBytes
        if let reference = self.reference {
            if self.matches(chunk, reference) {
                self.matched += chunk.readableBytes
                return
            }
            // Different after all: the copy starts with the part that did match.
            self.reference = nil
            if self.matched > 0 { self.chunks.append(reference.getSlice(at: reference.readerIndex, length: self.matched)!) }
        }
        self.chunks.append(chunk)
    }

    public func finish() -> Outcome {
        if let reference = self.reference {
            if self.matched == reference.readableBytes { return .identical }
            // A prefix of the recent body (shorter answer): the copy is that prefix.
            return .body(self.matched > 0 ? [reference.getSlice(at: reference.readerIndex, length: self.matched)!] : [])
        }
        return .body(self.chunks)
    }

    private func matches(_ chunk: ByteBuffer, _ reference: ByteBuffer) -> Bool {
        let count = chunk.readableBytes
        guard self.matched + count <= reference.readableBytes else { return false }
        return chunk.withUnsafeReadableBytes { mine in
            reference.withUnsafeReadableBytes { theirs in
                count == 0 || memcmp(mine.baseAddress!, theirs.baseAddress! + self.matched, count) == 0
            }
        }
    }
}

/// The last body extracted per resource (request target), kept for a few seconds and bounded
/// in bytes (oldest out first): what ``TeeCapture`` compares new answers with. Shared by the
/// event loops (lookups) and the tee's extraction loop (updates); time is the tee's clock's.
final class RecentBodies: Sendable {
    static let window: Duration = .seconds(5)
    static let limit = 32 << 20

    private struct State {
        var bodies: [String: (body: ByteBuffer, at: TeeInstant, serial: Int)] = [:]
        /// Keys in the order they were remembered; an entry whose serial is no longer the key's
        /// current one is stale and skipped (no O(n) removal under the lock the event loops take).
        var order: [(key: String, serial: Int)] = []
        var orderStart = 0
        var serial = 0
        var bytes = 0
    }

    private let state = Mutex(State())

    func body(for key: String, now: TeeInstant) -> ByteBuffer? {
        self.state.withLock { state in
            guard let seen = state.bodies[key], seen.at.duration(to: now) < Self.window else { return nil }
            return seen.body
        }
    }

    /// Forgets the bodies older than the window (they are never compared again; otherwise they
    /// stay until newer ones push them out).
    func forgetExpired(now: TeeInstant) {
        self.state.withLock { state in
            state.bodies = state.bodies.filter { $0.value.at.duration(to: now) < Self.window }
            state.bytes = state.bodies.values.reduce(0) { $0 + $1.body.readableBytes }
            state.order = state.order.filter { state.bodies[$0.key]?.serial == $0.serial }
            state.orderStart = 0
        }
    }

    func remember(_ body: ByteBuffer, for key: String, now: TeeInstant) {
        self.state.withLock { state in
            state.serial += 1
            if let old = state.bodies.updateValue((body, now, state.serial), forKey: key) { state.bytes -= old.body.readableBytes }
            state.order.append((key, state.serial))
            state.bytes += body.readableBytes
            while state.bytes > Self.limit, state.orderStart < state.order.count {
                let oldest = state.order[state.orderStart]
                state.orderStart += 1
                if let entry = state.bodies[oldest.key], entry.serial == oldest.serial {
                    state.bodies[oldest.key] = nil
                    state.bytes -= entry.body.readableBytes
                }
            }
            if state.order.count > 2 * state.bodies.count + 1024 {
                // Compact, so the order stays within twice the live entries: drop the consumed
                // prefix and the stale entries.
                state.order = state.order[state.orderStart...].filter { state.bodies[$0.key]?.serial == $0.serial }
                state.orderStart = 0
            }
        }
    }
}
