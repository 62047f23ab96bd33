import Foundation
import NIOCore
import NIOHTTP1

/// Routes of the fake Spotify. Catalog routes answer recorded fixtures; the `/v1/test/...`
/// routes exist for the proxy's tests (echo, status, streaming, delays).
final class FakeSpotifyHandler: ChannelInboundHandler {
    typealias InboundIn = NIOHTTPServerRequestFull
    typealias OutboundOut = HTTPServerResponsePart

    static let artistID = "0TnOYISbd1XYRBk9myaseg"
    static let albumID = "3IqzqH6ShrRtie9Yd2ODyG"

    private let fake: FakeSpotify

    init(fake: FakeSpotify) { self.fake = fake }

    func channelActive(context: ChannelHandlerContext) {
        self.fake.state.withLock { $0.counters.connectionsOpened += 1 }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fake.state.withLock { $0.counters.connectionsClosed += 1 }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = self.unwrapInboundIn(data)
        let path = String(request.head.uri.prefix { $0 != "?" })
        if path == "/api/token" {
            self.token(request, context: context)
            return
        }
        self.fake.state.withLock { $0.counters.apiRequests += 1 }
        guard self.authorized(request.head) else {
            self.fake.state.withLock { $0.counters.unauthorized += 1 }
            self.error(401, "Missing/invalid/expired access token", context: context, extra: [
                ("WWW-Authenticate", #"Bearer realm="spotify", error="invalid_token", error_description="Missing/invalid/expired access token""#)
            ])
            return
        }
        let query = Self.query(request.head.uri)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        let isGET = request.head.method == .GET
        if segments.count >= 3, segments[0] == "v1", segments[1] == "test" {
            let argument = segments.count > 3 ? segments[3] : ""
            switch segments[2] {
            case "echo":
                self.echo(request, context: context)
            case "status":
                let status = Int(argument) ?? 500
                var extra: [(String, String)] = []
                if status == 429 { extra.append(("Retry-After", "7")) }
                self.error(status, status == 429 ? "API rate limit exceeded" : "fake error \(status)", context: context, extra: extra)
            case "fault":
                guard let fault = Fault(rawValue: argument) else { return self.error(404, "no such fault", context: context) }
                self.inject(fault, context: context)
            case "bytes" where isGET:
                self.stream(total: Int(argument) ?? 0, context: context)
            case "slow" where isGET:
                let body = self.fake.fixtures.artist
                let head = request.head
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(argument) ?? 0)) {
                    self.json(body, request: head, context: context)
                }
            default:
                self.error(404, "Service not found", context: context)
            }
        } else if isGET, segments == ["v1", "artists", Self.artistID] {
            self.json(self.fake.fixtures.artist, request: request.head, context: context)
        } else if isGET, segments == ["v1", "albums", Self.albumID] {
            self.json(self.fake.fixtures.album, request: request.head, context: context)
        } else if isGET, segments == ["v1", "search"] {
            guard query["q"].map({ !$0.isEmpty }) == true, query["type"] != nil else {
                self.error(400, query["q"] == nil ? "No search query" : "Missing parameter type", context: context)
                return
            }
            self.json(self.fake.fixtures.search, request: request.head, context: context)
        } else if isGET, segments == ["v1", "artists", Self.artistID, "albums"] {
            self.artistAlbums(query: query, request: request.head, context: context)
        } else if isGET, segments.count == 3, segments[0] == "v1", ["artists", "albums", "tracks"].contains(segments[1]) {
            let id = segments[2]
            if id.count == 22, id.allSatisfy({ $0.isLetter || $0.isNumber }) {
                self.error(404, "Resource not found", context: context)
            } else {
                self.error(400, "invalid id", context: context)
            }
        } else {
            self.error(404, "Service not found", context: context)
        }
    }

    // MARK: Accounts service

    private func token(_ request: NIOHTTPServerRequestFull, context: ChannelHandlerContext) {
        let (mode, delay, lifetime) = self.fake.state.withLock { state in
            state.counters.tokenRequests += 1
            return (state.tokenMode, state.tokenDelay, state.tokenLifetime)
        }
        let expected = "Basic " + Data("\(self.fake.clientID):\(self.fake.clientSecret)".utf8).base64EncodedString()
        let body = request.body.map { String(buffer: $0) } ?? ""
        let answer: (HTTPResponseStatus, String)
        if request.head.method != .POST {
            answer = (.methodNotAllowed, #"{"error":"invalid_request","error_description":"Only POST"}"#)
        } else if mode == .serverError {
            answer = (.internalServerError, #"{"error":"server_error","error_description":"fake outage"}"#)
        } else if mode == .invalidClient || request.head.headers.first(name: "authorization") != expected {
            answer = (.badRequest, #"{"error":"invalid_client","error_description":"Invalid client"}"#)
        } else if !body.split(separator: "&").contains("grant_type=client_credentials") {
            answer = (.badRequest, #"{"error":"unsupported_grant_type","error_description":"grant_type parameter is missing"}"#)
        } else {
            let token = "fake-at-" + UUID().uuidString
            self.fake.state.withLock { state in
                state.issued += 1
                state.tokens[token] = .now() + .seconds(Int64(lifetime))
            }
            answer = (.ok, #"{"access_token":"\#(token)","token_type":"Bearer","expires_in":\#(lifetime),"scope":""}"#)
        }
        let send = {
            var headers = HTTPHeaders([("Content-Type", "application/json"), ("Cache-Control", "no-cache, no-store, must-revalidate")])
            headers.add(name: "Content-Length", value: String(answer.1.utf8.count))
            self.send(status: answer.0, headers: headers, body: Array(answer.1.utf8), context: context)
        }
        if delay > .zero {
            context.eventLoop.assumeIsolated().scheduleTask(in: delay) { send() }
        } else {
            send()
        }
    }

    private func authorized(_ head: HTTPRequestHead) -> Bool {
        guard let header = head.headers.first(name: "authorization"), header.hasPrefix("Bearer ") else { return false }
        let token = String(header.dropFirst("Bearer ".count))
        return self.fake.state.withLock { state in
            guard let expiry = state.tokens[token] else { return false }
            return expiry > .now()
        }
    }

    // MARK: Web API

    private func artistAlbums(query: [String: String], request: HTTPRequestHead, context: ChannelHandlerContext) {
        let items = self.fake.fixtures.artistAlbumItems
        let offset = Int(query["offset"] ?? "0") ?? -1
        let limit = Int(query["limit"] ?? "20") ?? -1
        guard (0...50).contains(limit), limit > 0 else { return self.error(400, "Invalid limit", context: context) }
        guard offset >= 0 else { return self.error(400, "Invalid offset", context: context) }
        let base = "\(self.fake.baseURL)/v1/artists/\(Self.artistID)/albums"
        func link(_ offset: Int) -> String { "\"\(base)?offset=\(offset)&limit=\(limit)\"" }
        let page = items.dropFirst(offset).prefix(limit)
        var body = Array("{\"href\":\(link(offset)),\"limit\":\(limit),".utf8)
        body += Array("\"next\":\(offset + limit < items.count ? link(offset + limit) : "null"),\"offset\":\(offset),".utf8)
        body += Array("\"previous\":\(offset > 0 ? link(max(0, offset - limit)) : "null"),\"total\":\(items.count),\"items\":[".utf8)
        for (index, item) in page.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body += item
        }
        body += Array("]}".utf8)
        self.json(body, request: request, context: context)
    }

    private struct Echo: Encodable {
        var method: String
        var uri: String
        var headers: [[String]]
        var body_length: Int
        var body_fnv1a: String
    }

    private func echo(_ request: NIOHTTPServerRequestFull, context: ChannelHandlerContext) {
        let body = request.body.map { Array($0.readableBytesView) } ?? []
        let echo = Echo(
            method: request.head.method.rawValue, uri: request.head.uri,
            headers: request.head.headers.map { [$0.name, $0.value] },
            body_length: body.count, body_fnv1a: String(FNV1a.hash(body), radix: 16))
        let data = (try? JSONEncoder().encode(echo)) ?? Data()
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("X-Fake-Echo", "yes")])
        headers.add(name: "Content-Length", value: String(data.count))
        self.send(status: .ok, headers: headers, body: Array(data), context: context)
    }

    /// `total` bytes of octet-stream, written one chunk at a time as the client takes them.
    private func stream(total: Int, context: ChannelHandlerContext) {
        let headers = HTTPHeaders([("Content-Type", "application/octet-stream"), ("Content-Length", String(total))])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
        func next(_ remaining: Int) {
            guard remaining > 0 else {
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let slice = chunk.getSlice(at: 0, length: min(remaining, chunk.readableBytes))!
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(slice)))).assumeIsolated().whenSuccess {
                next(remaining - slice.readableBytes)
            }
        }
        next(total)
    }

    private func json(_ body: [UInt8], request: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders([
            ("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "public, max-age=7200"),
        ])
        var payload = body
        // Spotify compresses when asked; so does the fake.
        if request.headers["accept-encoding"].contains(where: { $0.lowercased().contains("gzip") }) {
            payload = Gzip.encode(body)
            headers.add(name: "Content-Encoding", value: "gzip")
        }
        headers.add(name: "Content-Length", value: String(payload.count))
        self.send(status: .ok, headers: headers, body: payload, context: context)
    }

    private func error(_ status: Int, _ message: String, context: ChannelHandlerContext, extra: [(String, String)] = []) {
        let body = Array(#"{"error":{"status":\#(status),"message":"\#(message)"}}"#.utf8)
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "private, max-age=0")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: HTTPResponseStatus(statusCode: status), headers: headers, body: body, context: context)
    }

    private func send(status: HTTPResponseStatus, headers: HTTPHeaders, body: [UInt8], context: ChannelHandlerContext) {
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    static func query(_ uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var out: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
            out[key] = value
        }
        return out
    }
}

extension FakeSpotifyHandler {
    /// Misbehaviours for the proxy's fault tests, under `/v1/test/fault/…`.
    enum Fault: String {
        /// Part of a status line and headers, then a reset (RST).
        case resetInHeaders = "reset-in-headers"
        /// A full head promising 100,000 bytes, 10 of them, then a reset.
        case resetInBody = "reset-in-body"
        /// Reads the request and never answers.
        case stall
    }

    func inject(_ fault: Fault, context: ChannelHandlerContext) {
        // Raw bytes must go below the response encoder, which only takes typed parts.
        guard let raw = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        let reset = {
            // Linger 0: close with RST instead of FIN.
            if let socket = context.channel as? any SocketOptionProvider {
                socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        }
        switch fault {
        case .resetInHeaders:
            raw.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Type: appl"))).assumeIsolated().whenComplete { _ in reset() }
        case .resetInBody:
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"partial\""
            raw.writeAndFlush(NIOAny(ByteBuffer(string: head))).assumeIsolated().whenComplete { _ in reset() }
        case .stall:
            break
        }
    }
}
