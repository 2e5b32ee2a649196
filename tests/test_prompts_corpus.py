"""The shipped benign prompt corpus, its loader, its generator, and the prompt-log sampler."""

import json
import re
import runpy
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from memguard.prompts_corpus import (
    MAX_PROMPT_CHARS,
    PromptLogSample,
    benign_prompts,
    normalize_prompt,
    sample_prompt_log,
)
from memguard.prompts_file import PromptFileError

ROOT = Path(__file__).parent.parent
GENERATOR = ROOT / "scripts" / "make_benign_prompts.py"
SECRET = "Zyxwv Private Diary Page"

# Names that must never appear: the corpus is written without real people, artists, brands, franchises,
# famous works, landmarks or websites. Ambiguous ones are spelled so a common word cannot match
# ("ford mustang", not "mustang"; "edward hopper", not "hopper"); the vocabulary avoids them all.
ARTISTS = """
leonardo da vinci, da vinci, michelangelo, rembrandt, vermeer, van gogh, vincent van gogh, monet, claude monet,
renoir, degas, cezanne, manet, gauguin, picasso, pablo picasso, matisse, salvador dali, dali, magritte, frida kahlo,
kahlo, diego rivera, andy warhol, warhol, basquiat, banksy, keith haring, roy lichtenstein, jackson pollock, rothko,
kandinsky, mondrian, klimt, gustav klimt, egon schiele, edvard munch, hokusai, hiroshige, caravaggio, botticelli,
titian, goya, velazquez, el greco, hieronymus bosch, bruegel, brueghel, albrecht durer, william turner,
john constable, caspar david friedrich, edward hopper, norman rockwell, andrew wyeth, georgia o'keeffe, o'keeffe,
escher, m.c. escher, alphonse mucha, mucha, beksinski, h.r. giger, giger, moebius, greg rutkowski, rutkowski,
artgerm, wlop, ross tran, loish, james gurney, craig mullins, simon stalenhag, stalenhag, ilya kuvshinov,
makoto shinkai, hayao miyazaki, miyazaki, yoshitaka amano, frank frazetta, boris vallejo, thomas kinkade, bob ross,
beeple, james jean, ansel adams, annie leibovitz, steve mccurry, cartier-bresson, vivian maier, wes anderson,
tim burton, stanley kubrick, kubrick, tarantino, spielberg, christopher nolan, denis villeneuve, ridley scott,
guillermo del toro, yayoi kusama, kusama, jeff koons, damien hirst, david hockney, hockney, gustave dore,
john singer sargent, bouguereau, john william waterhouse, rossetti, leyendecker, dr. seuss, beatrix potter,
tolkien, lovecraft, lovecraftian, shakespeare, mozart, beethoven
"""
PEOPLE = """
taylor swift, beyonce, elon musk, barack obama, obama, donald trump, joe biden, queen elizabeth, king charles,
princess diana, albert einstein, einstein, isaac newton, napoleon, cleopatra, julius caesar, abraham lincoln,
george washington, winston churchill, gandhi, martin luther king, marilyn monroe, audrey hepburn, elvis presley,
elvis, michael jackson, the beatles, lady gaga, rihanna, kanye west, keanu reeves, tom cruise, brad pitt,
angelina jolie, leonardo dicaprio, scarlett johansson, emma watson, johnny depp, morgan freeman, dwayne johnson,
will smith, jennifer lawrence, zendaya, billie eilish, ariana grande, lionel messi, cristiano ronaldo,
michael jordan, lebron james, serena williams, usain bolt, steve jobs, bill gates, mark zuckerberg, jeff bezos,
charlie chaplin, bruce lee, dalai lama, jesus, buddha, mother teresa, che guevara, frida
"""
BRANDS = """
coca-cola, coca cola, pepsi, nike, adidas, gucci, prada, louis vuitton, chanel, rolex, iphone, ipad, macbook,
airpods, apple watch, samsung, google, microsoft, playstation, xbox, nintendo, game boy, gameboy, lego, barbie,
hot wheels, ferrari, lamborghini, porsche, bmw, mercedes, tesla, toyota, honda, ford mustang, volkswagen,
chevrolet, corvette, cadillac, jeep, harley-davidson, harley davidson, vespa, ducati, land rover, rolls-royce,
aston martin, starbucks, mcdonald's, mcdonalds, burger king, kfc, red bull, heineken, budweiser, ikea, amazon,
walmart, disney, pixar, dreamworks, marvel, dc comics, warner bros, netflix, hbo, hello kitty, sanrio, canon,
nikon, sony, fujifilm, leica, hasselblad, kodak, portra, ektachrome, kodachrome, velvia, ilford, polaroid, instax,
gopro, unreal engine, octane render, octane, blender, cinema 4d, zbrush, photoshop, lightroom, v-ray, vray,
keyshot, substance painter, midjourney, dall-e, dalle, stable diffusion, chatgpt, openai, nvidia, tiffany,
cartier, versace, dior, balenciaga, ray-ban, rayban, frisbee, jacuzzi, velcro, post-it, technicolor, imax,
cinemascope, steadicam, dolby, rubik, monopoly, tetris, minecraft, fortnite, roblox, pac-man, pacman, tamagotchi,
walkman, ipod, kindle, crayola, play-doh, nerf, tupperware, architectural digest, vogue, national geographic,
risograph, claymation, zeppelin, dyson
"""
FRANCHISES = """
star wars, jedi, sith, darth vader, yoda, stormtrooper, lightsaber, mandalorian, star trek, harry potter, hogwarts,
hermione, lord of the rings, gandalf, frodo, hobbit, middle-earth, sauron, game of thrones, avengers, spider-man,
spiderman, iron man, ironman, captain america, hulk, thor, loki, batman, superman, wonder woman, the joker, gotham,
pokemon, pokémon, pikachu, super mario, mario, luigi, zelda, hyrule, sonic the hedgehog, mickey mouse,
minnie mouse, donald duck, winnie the pooh, snoopy, garfield, shrek, minions, simpsons, spongebob, scooby-doo,
looney tunes, bugs bunny, tom and jerry, ninja turtles, godzilla, king kong, optimus prime, gundam, evangelion,
naruto, goku, dragon ball, sailor moon, attack on titan, totoro, spirited away, studio ghibli, ghibli,
my little pony, care bears, peppa pig, paw patrol, sherlock holmes, dracula, frankenstein, tarzan, peter pan,
tinker bell, alice in wonderland, cheshire cat, wizard of oz, willy wonka, james bond, indiana jones,
jurassic park, the matrix, blade runner, tron, xenomorph, terminator, robocop, mad max, arrakis, warhammer,
dungeons and dragons, dungeons & dragons, warcraft, skyrim, final fantasy, master chief, cyberpunk 2077,
doctor who, tardis, ghostbusters, smurfs, muppets, kermit, santa claus, zeus, poseidon, hercules, medusa, anubis
"""
ARTWORKS = """
mona lisa, starry night, the scream, girl with a pearl earring, pearl earring, great wave off kanagawa, kanagawa,
the last supper, american gothic, guernica, persistence of memory, creation of adam, birth of venus,
venus de milo, nighthawks, school of athens, the thinker, wanderer above the sea of fog, water lilies by,
liberty leading the people, the night watch, sunday afternoon on the island, son of man, the garden of earthly
delights, whistler's mother
"""
PLACES = """
eiffel tower, taj mahal, big ben, statue of liberty, colosseum, golden gate bridge, times square, mount fuji,
grand canyon, machu picchu, stonehenge, sydney opera house, burj khalifa, empire state building, notre dame,
sagrada familia, great wall, pyramids of giza, giza, great sphinx, petra, angkor wat, acropolis, parthenon,
louvre, kremlin, red square, tower bridge, london eye, hagia sophia, neuschwanstein, mont saint-michel,
chichen itza, christ the redeemer, leaning tower, pisa, brandenburg gate, arc de triomphe, central park,
hollywood, space needle, matterhorn, everest, kilimanjaro, niagara falls, yosemite, half dome, uluru, santorini,
venice, hallstatt, cappadocia, dubai, new york, manhattan, paris, london, tokyo, kyoto, shibuya, hong kong,
iceland, scotland, bali
"""
SITES = """
artstation, deviantart, pixiv, behance, dribbble, unsplash, pexels, pinterest, instagram, tumblr, reddit, twitter,
facebook, tiktok, youtube, flickr, 500px, cgsociety, civitai, lexica, danbooru, getty images, shutterstock,
wikipedia
"""


def _names(block: str) -> list[str]:
    return [name.strip() for name in block.replace("\n", " ").split(",") if name.strip()]


BLOCKLIST = sorted(
    {n for block in (ARTISTS, PEOPLE, BRANDS, FRANCHISES, ARTWORKS, PLACES, SITES) for n in _names(block)}
)


def _pattern(name: str) -> re.Pattern:
    body = r"\s+".join(re.escape(word) for word in name.split())
    return re.compile(rf"(?<![\w]){body}(?![\w])", re.IGNORECASE)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return benign_prompts()


def test_the_blocklist_is_broad_and_its_matcher_works():
    assert len(BLOCKLIST) >= 300
    assert _pattern("van gogh").search("a field, Van  Gogh style")
    assert _pattern("o'keeffe").search("flowers like o'keeffe")
    assert not _pattern("thor").search("a thorny rose")  # word boundaries, not substrings


def test_the_corpus_is_large_and_each_prompt_is_there_once(corpus):
    assert len(corpus) >= 2000
    assert len(set(corpus)) == len(corpus)
    assert len({normalize_prompt(p) for p in corpus}) == len(corpus)  # not even by case or spacing
    assert len({" ".join(re.findall(r"[a-z0-9]+", p.lower())) for p in corpus}) > 0.99 * len(corpus)


def test_no_empty_overlong_or_untidy_line(corpus):
    assert all(p.strip() == p and p for p in corpus)
    assert max(len(p) for p in corpus) <= MAX_PROMPT_CHARS
    assert not any("\t" in p or "\r" in p for p in corpus)


def test_no_blocked_name_or_web_address_appears(corpus):
    text = "\n".join(corpus)
    found = {name for name in BLOCKLIST if _pattern(name).search(text)}
    assert found == set()
    assert not re.search(r"www|https?:|\w\.(com|net|org|io)\b|@\w", text, re.IGNORECASE)


def _capitalized_inside(prompt: str) -> bool:
    """Whether a capitalized word ("Capital" then lowercase) appears other than first in a sentence or
    comma-separated tag: the shape a name takes ("Some Painter", "by Someone", "Old Town Bridge")."""
    for segment in re.split(r"[.,;:!?()\[\]]", prompt):
        if any(re.fullmatch(r"[A-Z][a-z][\w'-]*", token) for token in segment.split()[1:]):
            return True
    return False


def test_the_capitals_check_finds_names_and_allows_sentence_and_tag_starts():
    assert _capitalized_inside("a lighthouse by Some Painter")
    assert _capitalized_inside("Sunset over Old Harbor Bridge, 8k")
    assert not _capitalized_inside("A cat on a mat. The light is soft, Watercolor, HDR, 8K, ISO 200, I want it")


def test_no_proper_noun_like_capitals_outside_sentence_or_tag_starts(corpus):
    assert [p for p in corpus if _capitalized_inside(p)] == []


def test_styles_are_named_by_medium_never_by_who_made_them(corpus):
    text = "\n".join(corpus).lower()
    mass_media = runpy.run_path(str(GENERATOR), run_name="generator")["MASS_MEDIA"]  # "origami", "line art"...
    assert set(re.findall(r"in the style of (\w+)", text)) <= {"a", "an"} | {m.split()[0] for m in mass_media}
    after_by = Counter(re.findall(r"\bby (\w+)", text))
    assert set(after_by) <= {"a", "an", "the", "side", "rope"}, after_by  # "side by side", "connected by rope"


def test_the_corpus_is_varied(corpus):
    tokens = [re.findall(r"[\w'/-]+", p.lower()) for p in corpus]
    lengths = [len(t) for t in tokens]
    assert len({w for t in tokens for w in t}) >= 1200  # distinct words
    assert len({tuple(t[:3]) for t in tokens}) >= 0.4 * len(corpus)  # distinct openings
    assert sum(2 <= n <= 5 for n in lengths) >= 0.08 * len(corpus)  # short prompts
    assert sum(n >= 30 for n in lengths) >= 0.08 * len(corpus)  # long ones
    assert 0.3 < sum(p == p.lower() for p in corpus) / len(corpus) < 0.8  # mostly lowercase, not all


def test_the_datasheet_states_the_size(corpus):
    sheet = (ROOT / "memguard" / "data" / "BENIGN_PROMPTS.md").read_text()
    assert f"{len(corpus):,} prompts" in sheet


def test_the_generator_reproduces_the_shipped_file_byte_for_byte(tmp_path):
    out = tmp_path / "prompts.txt"
    runpy.run_path(str(GENERATOR), run_name="generator")["main"](["--out", str(out)])
    shipped = resources.files("memguard").joinpath("data", "benign_prompts.txt").read_bytes()
    assert out.read_bytes() == shipped


def test_the_file_ships_as_package_data():
    """Read through importlib.resources, as from an installed wheel; pyproject ships data/*.txt."""
    text = resources.files("memguard").joinpath("data", "benign_prompts.txt").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == len(benign_prompts())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^"memguard" = \[.*"data/\*\.txt"', pyproject, re.MULTILINE)


def test_limit_gives_a_seeded_subset_that_grows_by_inclusion(corpus):
    first = benign_prompts(limit=200, seed=0)
    assert len(first) == 200 == len(set(first)) and set(first) <= set(corpus)
    assert benign_prompts(limit=200, seed=0) == first  # deterministic
    assert benign_prompts(limit=500, seed=0)[:200] == first  # a larger limit keeps the smaller one's prompts
    other = benign_prompts(limit=200, seed=1)
    assert len(set(first) & set(other)) < 60  # another seed, another sample (about 13 shared by chance)
    assert first != corpus[:200]  # a shuffle, not the head of the file
    assert sorted(benign_prompts(limit=len(corpus), seed=3)) == sorted(corpus)
    assert benign_prompts() == corpus and benign_prompts() is not benign_prompts()  # callers may mutate


@pytest.mark.parametrize("limit", [0, -1, 10**6, 2.5, True])
def test_a_bad_limit_is_a_clear_error(limit):
    with pytest.raises(ValueError, match="limit must be an integer from 1 to"):
        benign_prompts(limit=limit)


# ---------------------------------------------------------------- the prompt-log sampler


def _log(tmp_path, rows, name="log.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_sampling_a_log_dedups_drops_bad_lines_and_counts_them(tmp_path):
    rows = [
        {"caption": "a red fox in the snow", "user": 1},
        {"caption": "A red  fox in the snow"},  # the same prompt, other case and spacing
        {"caption": "a lighthouse at dawn"},
        {"caption": "   "},  # empty
        {"caption": "x" * (MAX_PROMPT_CHARS + 1)},  # overlong
        {"text": SECRET},  # no caption field
        '{"caption": "cut off',  # a line a crash cut short
        ["not", "an", "object"],
        {"caption": "a known memorized prompt"},
        "",
        {"caption": "a bowl of ramen,  overhead shot"},
    ]
    sample = sample_prompt_log(_log(tmp_path, rows), n=10, seed=0, exclude=["A KNOWN memorized prompt"])
    assert isinstance(sample, PromptLogSample)
    assert sorted(sample.prompts) == ["a bowl of ramen, overhead shot", "a lighthouse at dawn", "a red fox in the snow"]
    assert (sample.lines_read, sample.malformed, sample.overlong, sample.excluded) == (10, 4, 1, 1)
    assert sample.truncated is False
    assert SECRET not in repr(sample) and "ramen" not in repr(sample)  # counts only in the repr


def test_log_samples_are_deterministic_nested_and_independent_of_log_order(tmp_path):
    prompts = [f"prompt number {i}" for i in range(300)]
    forward = _log(tmp_path, [{"caption": p} for p in prompts], "forward.jsonl")
    backward = _log(tmp_path, [{"caption": p} for p in reversed(prompts)] * 2, "backward.jsonl")
    small = sample_prompt_log(forward, n=20, seed=5).prompts
    assert len(small) == 20 == len(set(small))
    assert sample_prompt_log(backward, n=20, seed=5).prompts == small  # order and repeats do not matter
    assert sample_prompt_log(forward, n=50, seed=5).prompts[:20] == small
    everything = sample_prompt_log(backward, n=1000, seed=5).prompts  # nothing evicted: a plain sort
    assert sorted(everything) == sorted(prompts) and everything[:20] == small
    assert set(sample_prompt_log(forward, n=20, seed=6).prompts) != set(small)
    assert set(small) != set(prompts[:20])  # sampled, not the head of the log


def test_a_plain_text_log_and_max_lines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffone\r\n\ntwo\nthree\nfour\n".encode())
    everything = sample_prompt_log(path, n=10)
    assert sorted(everything.prompts) == ["four", "one", "three", "two"]  # the BOM and CRs are gone
    head = sample_prompt_log(path, n=10, max_lines=2)
    assert sorted(head.prompts) == ["one", "two"] and head.truncated and head.lines_read == 2


def test_a_log_can_name_another_field_and_holds_fewer_than_n(tmp_path):
    path = _log(tmp_path, [{"prompt": "a"}, {"prompt": "b"}], "log.txt")  # JSONL recognized by its first line
    sample = sample_prompt_log(path, n=5, field="prompt")
    assert sorted(sample.prompts) == ["a", "b"]


def test_an_overlong_line_is_skipped_without_reading_it_whole(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text("first\n" + "y" * 200_000 + "\nlast\n")
    sample = sample_prompt_log(path, n=5)
    assert sorted(sample.prompts) == ["first", "last"] and sample.overlong == 1


def test_a_log_that_cannot_be_used_is_a_clear_error(tmp_path):
    with pytest.raises(PromptFileError, match="cannot read prompt log"):
        sample_prompt_log(tmp_path / "absent.jsonl", n=5)
    bad = _log(tmp_path, [{"text": SECRET}, "not json " + SECRET])
    with pytest.raises(PromptFileError, match=r"no usable prompts \(2 lines read, 2 malformed") as caught:
        sample_prompt_log(bad, n=5)
    assert SECRET not in str(caught.value)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad\n")
    with pytest.raises(PromptFileError, match="no usable prompts"):
        sample_prompt_log(tmp_path / "binary.txt", n=5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n": 0}, ValueError, "n must be a positive integer"),
        ({"n": 5, "max_lines": 0}, ValueError, "max_lines must be a positive integer"),
        ({"n": 5, "seed": "0"}, TypeError, "seed must be an integer"),
        ({"n": 5, "exclude": "one prompt"}, TypeError, "exclude must be a collection"),
    ],
)
def test_bad_sampler_arguments_are_named(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        sample_prompt_log(_log(tmp_path, [{"caption": "a"}]), **kwargs)
