import Foundation
import Logging
import PostgresNIO
import SpotifyProxy

/// A database of a test's own inside a shared cluster, so tests running in parallel never see
/// each other's rows.
public struct PostgresTestDatabase: Sendable {
    public let url: String
    private let adminURL: String
    private let name: String

    public static func create(adminURL: String) async throws -> PostgresTestDatabase {
        let name = "spotify_proxy_test_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16))"
        try await Self.admin(adminURL) { client in
            try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"))
        }
        guard var components = URLComponents(string: adminURL) else { throw ConfigurationError("bad admin URL") }
        components.path = "/\(name)"
        return PostgresTestDatabase(url: components.string!, adminURL: adminURL, name: name)
    }

    public func drop() async throws {
        try await Self.admin(self.adminURL) { client in
            try await client.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(self.name) WITH (FORCE)"))
        }
    }

    static func admin(_ url: String, _ body: @Sendable (PostgresClient) async throws -> Void) async throws {
        let client = PostgresClient(configuration: try PostgresSink.configuration(from: url))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await body(client)
        }
    }
}
