import CWorkerIO
import NIOCore

/// What a worker connection has queued for its client, oldest first. Heads, chunk framing and
/// small bodies are copied into one buffer of the queue's own; a body of ``copyLimit`` bytes or
/// more is queued as the buffer it came in, not copied again (a 47 KB album answer would
/// otherwise be held twice while it is written). Written with one `sendmsg` of up to
/// ``maxVectors`` buffers, as NIO's pending writes are.
struct OutputQueue {
    /// Bodies this large are queued as they are; smaller ones cost less copied than as one
    /// more vector.
    static let copyLimit = 4096
    /// Buffers handed to one `sendmsg` (the kernel takes up to `IOV_MAX`, 1,024).
    static let maxVectors = 64
    /// Bytes the queue's own buffer may have had written from its front before small writes go
    /// to a new one: a slow client of a long answer made of small pieces always has bytes
    /// queued, so the buffer would never be emptied, and NIO's buffer keeps the bytes read from it.
    static let tailSealOffset = 64 * 1024

    /// Queued before `tail`, oldest first: bodies, and the queue's own buffers that came before
    /// a body (or grew past ``tailSealOffset``).
    private var buffers = CircularBuffer<ByteBuffer>(initialCapacity: 4)
    /// The queue's own buffer, last in order: small writes are appended to it.
    private var tail = ByteBuffer()
    /// The bytes queued and not written.
    private(set) var readableBytes = 0

    var isEmpty: Bool { self.readableBytes == 0 }

    mutating func writeStaticString(_ string: StaticString) {
        self.sealLongTail()
        self.readableBytes += self.tail.writeStaticString(string)
    }

    mutating func writeString(_ string: String) {
        self.sealLongTail()
        self.readableBytes += self.tail.writeString(string)
    }

    /// Queues the bytes `body` writes into at least `minimumCount` writable bytes (`body` returns
    /// their count); nothing if it throws.
    mutating func write<Failure: Error>(
        reserving minimumCount: Int, _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Int
    ) throws(Failure) {
        self.sealLongTail()
        self.readableBytes += try self.tail.writeWithUnsafeMutableBytes(minimumWritableBytes: minimumCount, body)
    }

    /// Queues `body`'s readable bytes: copied if small, else the buffer itself.
    mutating func append(_ body: ByteBuffer) {
        let count = body.readableBytes
        guard count >= Self.copyLimit else {
            self.sealLongTail()
            var body = body
            self.readableBytes += self.tail.writeBuffer(&body)
            return
        }
        self.sealTail()
        self.buffers.append(body)
        self.readableBytes += count
    }

    /// The queue's own buffer goes into `buffers` (as it is, not copied) and small writes start
    /// a new one.
    private mutating func sealTail() {
        guard self.tail.readableBytes > 0 else { return }
        self.buffers.append(self.tail)
        self.tail = ByteBuffer()
    }

    private mutating func sealLongTail() {
        if self.tail.readerIndex >= Self.tailSealOffset { self.sealTail() }
    }

    /// Writes as much as `fd` takes in one call: the count written, or -errno.
    mutating func write(to fd: Int32) -> Int {
        guard !self.buffers.isEmpty else {
            let count = self.tail.withUnsafeReadableBytes { spx_write(fd, $0.baseAddress, $0.count) }
            if count > 0 { self.consume(count) }
            return count
        }
        let vectorCount = min(self.buffers.count + 1, Self.maxVectors)
        let count = withUnsafeTemporaryAllocation(of: iovec.self, capacity: vectorCount) { vectors in
            withUnsafeTemporaryAllocation(of: Unmanaged<AnyObject>.self, capacity: vectorCount) { storages in
                var used = 0
                func add(_ buffer: ByteBuffer) {
                    guard used < vectorCount, buffer.readableBytes > 0 else { return }
                    // The storage is held for the call, as NIO's pending writes hold it.
                    buffer.withUnsafeReadableBytesWithStorageManagement { bytes, storage in
                        vectors[used] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                        storages[used] = storage.retain()
                    }
                    used += 1
                }
                for buffer in self.buffers {
                    add(buffer)
                    if used == vectorCount { break }
                }
                add(self.tail)
                defer { for index in 0..<used { storages[index].release() } }
                return spx_writev(fd, vectors.baseAddress, Int32(used))
            }
        }
        if count > 0 { self.consume(count) }
        return count
    }

    /// Drops the first `count` queued bytes, written.
    private mutating func consume(_ count: Int) {
        self.readableBytes -= count
        var left = count
        while left > 0, let first = self.buffers.first {
            let size = first.readableBytes
            if size > left {
                self.buffers.modify(self.buffers.startIndex) { $0.moveReaderIndex(forwardBy: left) }
                return
            }
            left -= size
            self.buffers.removeFirst()
        }
        self.tail.moveReaderIndex(forwardBy: left)
        guard self.tail.readableBytes == 0 else { return }
        self.tail.clearReleasingLargeStorage()
        // Once nothing is queued, a burst's worth of slots is given back too. (A write may end
        // where a body ends, with more bodies queued after it and nothing in the tail.)
        if self.buffers.isEmpty, self.buffers.capacity > 16 { self.buffers = CircularBuffer(initialCapacity: 4) }
    }

    /// Everything queued, oldest first, as the buffers it is held in; the queue is left empty
    /// (the HTTPS listener hands them to NIO to write).
    mutating func takeAll() -> [ByteBuffer] {
        self.sealTail()
        defer {
            self.buffers.removeAll(keepingCapacity: true)
            self.readableBytes = 0
        }
        return Array(self.buffers)
    }

    /// The capacity of the buffers queued, the queue's own and the bodies (tests: it stays bounded).
    var queuedCapacity: Int {
        self.tail.capacity + self.buffers.reduce(0) { $0 + $1.capacity }
    }
}
