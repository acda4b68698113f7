import Testing

@testable import RelayCore

@Suite struct SubjectTests {
    @Test(arguments: ["orders", "orders.eu.created", "a.b-c.d_e.1"])
    func acceptsValidSubjects(_ subject: String) {
        #expect(Subject.publishError(subject) == nil)
        #expect(Subject.filterError(subject) == nil)
    }

    @Test(arguments: ["", ".", "a.", ".a", "a..b", "a b", "a.\tb", "orders.*", "orders.>"])
    func refusesInvalidPublishSubjects(_ subject: String) {
        #expect(Subject.publishError(subject) != nil)
    }

    @Test(arguments: ["", "a..b", "a.>.b", ">.a", "a.b*", "a.*b", "a.>>", "a b.*"])
    func refusesInvalidFilters(_ filter: String) {
        #expect(Subject.filterError(filter) != nil)
    }

    @Test func explainsWhatIsWrong() {
        #expect(Subject.filterError("a.>.b")?.contains("last") == true)
        #expect(Subject.publishError("a..b")?.contains("empty token") == true)
        #expect(Subject.publishError("a b")?.contains("whitespace") == true)
    }

    @Test func matchesAsNATSDoes() {
        #expect(Subject.matches(filter: "orders.*", subject: "orders.new"))
        #expect(!Subject.matches(filter: "orders.*", subject: "orders.eu.new"))
        #expect(Subject.matches(filter: "orders.>", subject: "orders.eu.new"))
        #expect(!Subject.matches(filter: "orders.>", subject: "orders"))
        #expect(Subject.matches(filter: "*.*.new", subject: "orders.eu.new"))
        #expect(Subject.matches(filter: ">", subject: "anything.at.all"))
        #expect(!Subject.matches(filter: "orders", subject: "orders.new"))
    }
}

@Suite struct SubjectIndexTests {
    @Test func findsWhatMatches() {
        var index = SubjectIndex<Int>()
        index.insert(1, filter: "orders.*")
        index.insert(2, filter: "orders.>")
        index.insert(3, filter: "orders.eu")
        index.insert(4, filter: "*.eu")
        index.insert(5, filter: "payments.>")
        let matched1 = index.match("orders.eu")
        #expect(Set(matched1) == [1, 2, 3, 4])
        let matched2 = index.match("orders.eu.created")
        #expect(Set(matched2) == [2])
        let matched3 = index.match("orders")
        #expect(matched3.isEmpty)
        let matched4 = index.match("payments.eu")
        #expect(Set(matched4) == [4, 5])
    }

    @Test func theCacheFollowsChanges() {
        var index = SubjectIndex<Int>()
        index.insert(1, filter: "a.b")
        let matched5 = index.match("a.b")
        #expect(matched5 == [1])
        #expect(index.cachedSubjectCount == 1)
        index.insert(2, filter: "a.*")
        let matched6 = index.match("a.b")
        #expect(Set(matched6) == [1, 2])
        index.remove(1, filter: "a.b")
        let matched7 = index.match("a.b")
        #expect(matched7 == [2])
        index.insert(3, filter: "x.y")  // does not match a.b: its cached result survives
        #expect(index.cachedSubjectCount == 1)
        let matched8 = index.match("a.b")
        #expect(matched8 == [2])
    }

    @Test func removingFreesTheTrie() {
        var index = SubjectIndex<Int>()
        let base = index.liveLevelCount
        for i in 0..<100 { index.insert(i, filter: "s.\(i).*.x.>") }
        #expect(index.liveLevelCount > base + 100)
        for i in 0..<100 {
            let removed = index.remove(i, filter: "s.\(i).*.x.>")
            #expect(removed)
        }
        #expect(index.liveLevelCount == base)
        #expect(index.count == 0)
        let removedAgain = index.remove(1, filter: "s.1.*.x.>")
        #expect(!removedAgain)
    }

    @Test func sameEntryUnderTwoFiltersAndTwoEntriesUnderOne() {
        var index = SubjectIndex<Int>()
        index.insert(1, filter: "a.*")
        index.insert(1, filter: "a.b")
        index.insert(2, filter: "a.b")
        let matched9 = index.match("a.b")
        #expect(matched9.sorted() == [1, 1, 2])
        index.remove(1, filter: "a.b")
        let matched10 = index.match("a.b")
        #expect(matched10.sorted() == [1, 2])
    }

    /// Random filters and subjects from a small alphabet, added and removed at random: the index
    /// (with its cache) always agrees with the token-by-token definition.
    @Test(arguments: [1, 2, 3, 4, 5])
    func agreesWithTheNaiveMatcher(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let words = ["a", "b", "c", "orders", "eu"]
        func subject() -> String {
            (0..<Int.random(in: 1...4, using: &random)).map { _ in words.randomElement(using: &random)! }.joined(separator: ".")
        }
        func filter() -> String {
            var tokens = (0..<Int.random(in: 1...4, using: &random)).map { _ in
                Int.random(in: 0..<4, using: &random) == 0 ? "*" : words.randomElement(using: &random)!
            }
            if Int.random(in: 0..<4, using: &random) == 0 { tokens[tokens.count - 1] = ">" }
            return tokens.joined(separator: ".")
        }
        var index = SubjectIndex<Int>(cacheCapacity: 32)
        var live: [Int: String] = [:]
        var next = 0
        for _ in 0..<2_000 {
            if live.isEmpty || Int.random(in: 0..<3, using: &random) > 0 {
                let text = filter()
                #expect(Subject.filterError(text) == nil)
                index.insert(next, filter: text)
                live[next] = text
                next += 1
            } else {
                let victim = live.keys.randomElement(using: &random)!
                let removed = index.remove(victim, filter: live[victim]!)
                #expect(removed)
                live[victim] = nil
            }
            let probe = subject()
            let expected = live.filter { Subject.matches(filter: $0.value, subject: probe) }.map(\.key).sorted()
            let matched11 = index.match(probe)
            #expect(matched11.sorted() == expected, "subject \(probe)")
        }
        #expect(index.count == live.count)
    }
}

/// A small deterministic generator, so a failing seed fails again.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
