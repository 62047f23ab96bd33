import Foundation
import Logging
import NIOPosix
import Testing

@testable import SpotifyProxy

@Suite("A user's token fetcher and the user's file")
struct UserTokenFetcherTests {
    static func fetcher(_ directory: URL, environment: String?) -> UserTokenFetcher {
        UserTokenFetcher(
            label: "default", store: UserStore(directory: directory.path),
            grant: TokenGrant(tokenURL: "http://127.0.0.1:1/api/token", client: UpstreamClient(configuration: .init()), eventLoopGroup: MultiThreadedEventLoopGroup.singleton),
            clientID: "id", clientSecret: nil, environmentRefreshToken: environment, logger: Logger(label: "test"))
    }

    @Test("default's file is not a login: with SPOTIFY_REFRESH_TOKEN set, that token is the user (the listing counts default through it); without, a login is asked for")
    func strayDefaultFile() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "{garbage".write(to: directory.appendingPathComponent("default.json"), atomically: true, encoding: .utf8)
        #expect(try Self.fetcher(directory, environment: "env-token").currentUser().refreshToken == "env-token")
        #expect {
            _ = try Self.fetcher(directory, environment: nil).currentUser()
        } throws: { error in
            "\(error)".contains("is not a login")
        }
    }
}
