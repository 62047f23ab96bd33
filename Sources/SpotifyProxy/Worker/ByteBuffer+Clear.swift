import NIOCore

extension ByteBuffer {
    /// Empties the buffer, giving back its memory when it had grown past 16 KiB (a pipelined
    /// burst, a large head): an idle keep-alive connection holds little (256 connections each
    /// keeping an album's worth came to 12 MiB).
    mutating func clearReleasingLargeStorage() {
        if self.capacity > 16 * 1024 {
            self = ByteBuffer()
        } else {
            self.clear()
        }
    }
}
