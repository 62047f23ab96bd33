import FakeSpotify
import Foundation
import Logging
import NIOPosix
import SpotifyProxyTestSupport
import Synchronization
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
        #expect(try Self.fetcher(directory, environment: "env-token").currentUser().user.refreshToken == "env-token")
        #expect {
            _ = try Self.fetcher(directory, environment: nil).currentUser()
        } throws: { error in
            "\(error)".contains("is not a login")
        }
    }

    /// The users directory, with writes that fail while ``failing`` is set (a full disk).
    final class FailingWrites: UserFiles {
        let store: UserStore
        let failing = Mutex(true)
        init(_ store: UserStore) { self.store = store }
        func load(_ label: String) throws(UserStoreError) -> StoredUser? { try self.store.load(label) }
        func save(_ user: StoredUser) throws(UserStoreError) {
            if self.failing.withLock({ $0 }) { throw UserStoreError("cannot write: No space left on device (a test's)") }
            try self.store.save(user)
        }
    }

    static func fetcher(
        _ label: String, files: any UserFiles, fake: FakeSpotify, client: UpstreamClient, environment: String? = nil, started: Date = Date()
    ) -> UserTokenFetcher {
        UserTokenFetcher(
            label: label, store: files, grant: TokenGrant(tokenURL: fake.tokenURL, client: client, eventLoopGroup: MultiThreadedEventLoopGroup.singleton),
            clientID: fake.clientID, clientSecret: nil, environmentRefreshToken: environment, started: started, logger: Logger(label: "test"))
    }

    @Test("a rotated refresh token that cannot be written is used from memory through further rotations (each single-use), and written once the disk takes it; the file then holds the live one")
    func unsavedRotations() async throws {
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        do {
            let directory = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let login = try await UserTokenTests.login("alice", as: "alice-id", fake: fake, users: directory.path)
            let files = FailingWrites(UserStore(directory: directory.path))
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let fetcher = Self.fetcher("alice", files: files, fake: fake, client: client)
                // Spotify refuses a spent refresh token: each refresh succeeding means each sent the one the refresh before got.
                for _ in 0..<3 { _ = try await fetcher.fetchToken() }
                #expect(try files.store.load("alice")?.refreshToken == login.refreshToken, "nothing written while writes fail")
                files.failing.withLock { $0 = false }
                _ = try await fetcher.fetchToken()
                _ = try await fetcher.fetchToken()
                // What the file holds is the live token: a fetcher that knows only the file (a restart) refreshes with it.
                let restarted = Self.fetcher("alice", files: UserStore(directory: directory.path), fake: fake, client: client)
                _ = try await restarted.fetchToken()
            }
        } catch {
            try await fake.shutdown()
            throw error
        }
        try await fake.shutdown()
    }

    @Test("SPOTIFY_REFRESH_TOKEN: its file keeps the chain it began (and the scopes Spotify answered); a new value replaces that chain; a login's file wins over it")
    func environmentTokenReplaced() async throws {
        #expect(UserTokenFetcher.fingerprint("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "FIPS 180-2's SHA-256 vector")
        // A file the variable began before the proxy kept its fingerprint (no id, no scopes) is its chain; a login's is not.
        let legacy = StoredUser(label: "default", refreshToken: "R", scopes: [], spotifyUserID: nil, authorizedAt: Date())
        #expect(!legacy.isLogin && !UserTokenFetcher.replaces(legacy, environmentToken: "other"))
        #expect(StoredUser(label: "default", refreshToken: "R", scopes: ["user-read-private"], spotifyUserID: "a", authorizedAt: Date()).isLogin)
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        do {
            let directory = try temporaryDirectory()
            let store = UserStore(directory: directory.path)
            // Two logins' refresh tokens, given to the proxy as SPOTIFY_REFRESH_TOKEN (their files removed).
            let first = try await UserTokenTests.login("default", as: "env-id", fake: fake, users: directory.path)
            let second = try await UserTokenTests.login("other", as: "env2-id", fake: fake, users: directory.path)
            for label in ["default", "other"] { _ = try store.delete(label) }
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                _ = try await Self.fetcher("default", files: store, fake: fake, client: client, environment: first.refreshToken).fetchToken()
                let written = try #require(try store.load("default"))
                #expect(written.refreshToken != first.refreshToken && written.environmentTokenSHA256 == UserTokenFetcher.fingerprint(first.refreshToken))
                #expect(!written.scopes.isEmpty, "from Spotify's answer")
                // A restart with the same variable: the file's rotated token, not the spent one.
                let again = Self.fetcher("default", files: store, fake: fake, client: client, environment: first.refreshToken)
                #expect(try again.currentUser().user.refreshToken == written.refreshToken)
                _ = try await again.fetchToken()
                // A restart with a new value: it is the user now, and its rotation replaces the file.
                let replaced = Self.fetcher("default", files: store, fake: fake, client: client, environment: second.refreshToken)
                #expect(try replaced.currentUser().user.refreshToken == second.refreshToken)
                _ = try await replaced.fetchToken()
                #expect(try store.load("default")?.environmentTokenSHA256 == UserTokenFetcher.fingerprint(second.refreshToken))
                // A login over it: the login is used, whatever the variable holds.
                let login = try await UserTokenTests.login("default", as: "alice-id", fake: fake, users: directory.path)
                #expect(try Self.fetcher("default", files: store, fake: fake, client: client, environment: second.refreshToken).currentUser().user.refreshToken == login.refreshToken)
            }
        } catch {
            try await fake.shutdown()
            throw error
        }
        try await fake.shutdown()
    }

    @Test("SPOTIFY_REFRESH_TOKEN's rotations, with no file and writes failing: used from memory, then written; the listing's login for it is what the written file reads (not a new login)")
    func unsavedEnvironmentRotations() async throws {
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        do {
            let directory = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            // A login's refresh token, given to the proxy as SPOTIFY_REFRESH_TOKEN (its file removed).
            let login = try await UserTokenTests.login("default", as: "env-id", fake: fake, users: directory.path)
            try FileManager.default.removeItem(atPath: directory.path + "/default.json")
            let files = FailingWrites(UserStore(directory: directory.path))
            let started = Date(timeIntervalSince1970: 1_796_342_400)
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let fetcher = Self.fetcher("default", files: files, fake: fake, client: client, environment: login.refreshToken, started: started)
                for _ in 0..<2 { _ = try await fetcher.fetchToken() }
                #expect(try files.store.load("default") == nil)
                files.failing.withLock { $0 = false }
                _ = try await fetcher.fetchToken()
                _ = try await fetcher.fetchToken()
                let written = try #require(try files.store.load("default"))
                #expect(written.refreshToken != login.refreshToken)
                #expect(
                    UserTokens.login(of: written)
                        == UserTokens.login(of: UserTokenFetcher.environmentUser(label: "default", refreshToken: "", started: started)))
            }
        } catch {
            try await fake.shutdown()
            throw error
        }
        try await fake.shutdown()
    }
}
