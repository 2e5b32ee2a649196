"""Write memguard/data/benign_prompts.txt: benign text-to-image prompts written by the project.

Calibration needs benign prompts of the kind a service receives, and an operator with a fresh SD 1.5
or SDXL deployment has none at hand. This script composes them from vocabularies written here
(subjects, scenes, media, photography and art terms, the tags people add), through many sentence
shapes, so the corpus looks like what people type: short and long, tag lists and sentences, mostly
lowercase, a few typos. Nothing here names a real person, an artist, a brand, a franchise, a famous
work, a landmark or a website, and no word is capitalized except at the start of a sentence or a
tag (tests/test_prompts_corpus.py checks both).

Deterministic: every choice comes from `random.Random(SEED).random()`, the one stream Python
promises to keep across versions, so the file regenerates byte for byte anywhere:

    python scripts/make_benign_prompts.py                  # writes memguard/data/benign_prompts.txt
    python scripts/make_benign_prompts.py --stats          # and prints diversity figures
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

SEED = 1537
TARGET = 3000
MAX_CHARS = 400  # the loader's and the tests' limit; CLIP reads 77 tokens anyway
PREFIX_CAP = 24  # at most this many prompts share their first three words, so openers stay varied
OUT = Path(__file__).resolve().parent.parent / "memguard" / "data" / "benign_prompts.txt"


class Draw:
    """Choices built on `random()` alone: `choice`, `shuffle` and friends may change between Python
    versions for the same seed, `random()` may not."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def below(self, n: int) -> int:
        return min(int(self._rng.random() * n), n - 1)

    def pick(self, items: Sequence[str]) -> str:
        return items[self.below(len(items))]

    def chance(self, p: float) -> bool:
        return self._rng.random() < p

    def between(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def some(self, items: Sequence[str], k: int) -> list[str]:
        """k distinct items, in the order drawn."""
        pool = list(dict.fromkeys(items))
        return [pool.pop(self.below(len(pool))) for _ in range(min(k, len(pool)))]

    def weighted(self, options: Sequence[tuple[float, Callable]]) -> Callable:
        total = sum(weight for weight, _ in options)
        mark = self._rng.random() * total
        for weight, option in options:
            mark -= weight
            if mark < 0:
                return option
        return options[-1][1]


def words(block: str) -> tuple[str, ...]:
    """One vocabulary entry per line."""
    return tuple(line.strip() for line in block.strip().splitlines() if line.strip())


# plural and mass nouns take no article: "desert dunes at dawn", not "a desert dunes"
PLURALS = ("badlands", "rice terraces", "desert dunes", "rolling green hills", "sea cliffs", "salt flats", "tundra",
           "steppe", "three tacos", "cinnamon rolls", "dim sum", "fried eggs", "roasted vegetables", "avocado toast")
MASS_MEDIA = ("stained glass", "embroidery", "origami", "papercraft", "voxel art", "pixel art", "line art",
              "concept art", "digital art", "mosaic", "tapestry", "watercolor", "lofi")


def article(phrase: str) -> str:
    """`phrase` with "a" or "an" (the vocabulary avoids the words English spells against their sound)."""
    if phrase in MASS_MEDIA or any(re.search(rf"(^| ){plural}\b", phrase) for plural in PLURALS):
        return phrase
    first = phrase.split()[0].lower()
    vowel = first[0] in "aeio" or (first[0] == "u" and not first.startswith(("uni", "use", "usu")))
    return ("an " if vowel or first in ("hour", "honest") else "a ") + phrase


# ---------------------------------------------------------------- subjects

PERSON_ROLES = words("""
woman
man
girl
boy
teenager
grandmother
grandfather
fisherman
baker
chef
nurse
farmer
gardener
carpenter
blacksmith
potter
violinist
cellist
street musician
jazz singer
drummer
dancer
ballerina
skateboarder
surfer
rock climber
hiker
cyclist
marathon runner
boxer
knight
samurai
monk
shepherd
beekeeper
librarian
scientist
astronaut
pilot
sailor
lighthouse keeper
tailor
florist
barista
mechanic
photographer
painter
sculptor
student
professor
detective
fortune teller
traveler
nomad
cowboy
explorer
mountaineer
scuba diver
gymnast
street vendor
fruit seller
watchmaker
bookbinder
glassblower
archer
warrior
queen
king
princess
prince
witch
wizard
pirate captain
firefighter
mail carrier
bride
ice skater
tea master
puppeteer
falconer
""")

PERSON_TRAITS = words("""
young
old
elderly
middle-aged
tired
smiling
laughing
thoughtful
freckled
bearded
tall
short-haired
curly-haired
red-haired
gray-haired
tattooed
barefoot
sleepy
cheerful
serious
weathered
shy
proud
lonely
happy
wrinkled
determined
""")

PERSON_ATTIRE = words("""
in a red coat
wearing a yellow raincoat
in a chunky knitted sweater
with a straw hat
wearing round glasses
in a worn leather jacket
in a flowing white dress
in a tailored gray suit
in a hooded cloak
with a heavy backpack
holding a black umbrella
holding a cup of coffee
with a bouquet of wildflowers
in paint-stained overalls
in an embroidered silk robe
in a puffer jacket
in a white spacesuit
in dented plate armor
in a green velvet gown
with a long red scarf
in a faded denim jacket
wearing big headphones
with a flower crown
in a wool coat and beret
in a lab coat
in a chef's apron
wearing an orange beanie
with braided hair
in a wetsuit
in hiking gear
in a black tuxedo
with a camera around the neck
in striped pajamas
in a yellow sundress
carrying a paper lantern
wearing a scarf and mittens
in a patched sweater
with a walking stick
in a fur-lined parka
with silver earrings
""")

PERSON_ACTIONS = words("""
reading a book
mending a fishing net
walking a dog
riding a bicycle
drinking tea
playing the violin
painting at an easel
waiting for a train
looking out a rainy window
laughing with friends
cooking dinner
dancing in the rain
fishing from a pier
climbing a rock wall
feeding pigeons
writing in a journal
carrying groceries
asleep on a bench
selling fruit
playing chess
tending a vegetable garden
baking bread
repairing an old clock
crossing a busy street
standing on a rooftop
sitting by a campfire
looking up at the stars
riding a huge wave
skating on a frozen pond
carrying a lantern
hanging laundry
sketching in a notebook
pouring coffee
sweeping the porch
playing guitar
holding a sleeping cat
blowing out birthday candles
picking apples
rowing a small boat
waving goodbye
""")

ANIMALS = words("""
cat
kitten
dog
puppy
golden retriever
corgi
fox
red fox
arctic fox
wolf
brown bear
polar bear
panda
red panda
owl
barn owl
eagle
hummingbird
parrot
flamingo
penguin
puffin
otter
sea otter
rabbit
hedgehog
squirrel
raccoon
deer
stag
moose
horse
pony
donkey
cow
sheep
goat
pig
rooster
duck
swan
frog
tree frog
sea turtle
tortoise
chameleon
octopus
jellyfish
humpback whale
dolphin
koi fish
goldfish
butterfly
moth
bumblebee
ladybug
dragonfly
snail
crab
elephant
giraffe
zebra
lion
tiger
leopard
cheetah
snow leopard
gorilla
orangutan
sloth
kangaroo
koala
capybara
alpaca
llama
camel
bison
crow
raven
magpie
robin
peacock
heron
kingfisher
bat
mouse
hamster
ferret
axolotl
seal
walrus
lynx
badger
""")

ANIMAL_TRAITS = words("""
fluffy
tiny
sleepy
curious
majestic
wet
old
baby
wild
grumpy
playful
spotted
striped
white
black
ginger
scruffy
happy
startled
chubby
elegant
muddy
""")

ANIMAL_ACTIONS = words("""
sleeping on a windowsill
curled up in a basket
chasing a butterfly
sitting in the snow
drinking from a stream
wearing a tiny hat
reading a newspaper
playing with yarn
looking at the camera
running through a meadow
perched on a branch
swimming in clear water
peeking out of a hollow log
standing on a mossy rock
sitting in the rain
napping in the sun
eating a strawberry
yawning
catching snowflakes
hiding in tall grass
splashing in a puddle
sitting on a stack of books
drinking coffee at a cafe
wearing a knitted sweater
in a teacup
in a cardboard box
""")

OBJECTS = words("""
an antique pocket watch
a vintage typewriter
a brass telescope
a ship in a bottle
a stack of old books
a ceramic teapot
a wooden rocking chair
a leather armchair
a bicycle leaning against a wall
an old iron key
a melting candle
an oil lamp
a houseplant in a terracotta pot
a vase of sunflowers
an old globe
a brass compass
a chess set
a violin on a velvet cloth
an acoustic guitar
a grand piano
an old film camera
a pair of worn boots
a leather backpack
an hourglass
a music box
a paper lantern
a snow globe
a paper crane
a red kite
a teddy bear
a yellow rubber duck
a mechanical keyboard
a retro computer
a transistor radio
a crystal ball
a glowing potion bottle
a sword stuck in a stone
a golden crown
a treasure chest
a rolled map
a quill and inkwell
an empty birdcage
an ornate mirror
a perfume bottle
a glass of water
a pair of sneakers
a wristwatch
a pocket knife
a ceramic vase
a woven basket
a vinyl record player
a rotary phone
a skateboard
an umbrella
a lamp made of driftwood
a handmade quilt
a jar of fireflies
a bonsai tree
a cactus in a tiny pot
a knitted scarf
""")

FOODS = words("""
a bowl of ramen
a slice of pepperoni pizza
a stack of pancakes with syrup
a platter of sushi
a cappuccino with latte art
a buttery croissant
a chocolate layer cake
a strawberry tart
a cheeseburger with fries
three tacos
a bowl of fresh fruit
a loaf of sourdough bread
a cheese board with grapes
a tower of macarons
a bowl of noodle soup
a plate of steamed dumplings
a glass of red wine
a pitcher of lemonade
an ice cream cone
a tray of cupcakes
a bowl of tomato soup
avocado toast with an egg
a plate of spaghetti
a breakfast spread
a slice of watermelon
honey dripping from a wooden spoon
cinnamon rolls
a birthday cake with candles
a bowl of curry
a pot of stew
a cup of hot chocolate
a lemon meringue pie
a bowl of cherries
a basket of baguettes
a charcuterie board
a smoothie bowl
fried eggs in a cast iron pan
a salad with pomegranate seeds
a pile of donuts
a cup of green tea
roasted vegetables on a tray
a stack of waffles
a bowl of pho
grilled fish with lemon
a fruit tart
dim sum in bamboo baskets
""")

FOOD_SETTINGS = words("""
on a rustic wooden table
on a marble counter
on a checkered tablecloth
on a dark slate board
by a sunny window
on a cafe table
on a picnic blanket
in a busy kitchen
on a white plate
with steam rising
""")

VEHICLES = words("""
a red vintage car
an old pickup truck
a motorcycle
a sailing boat
a fishing boat
a steam locomotive
a tram
a double-decker bus
a hot air balloon
a biplane
a fighter jet
a rowboat
a submarine
a spaceship
an airship
a bicycle
a scooter
a tractor
a food truck
a camper van
a canoe
a horse-drawn carriage
a race car
a school bus
a fire truck
a yellow taxi
a cargo ship
a rocket
a lunar rover
a hovercraft
a cable car
a wooden sled
a rusty old car
a convertible
a freight train
a seaplane
a tugboat
a houseboat
a monster truck
a dune buggy
""")

VEHICLE_SETTINGS = words("""
parked on a cobblestone street
on a desert highway
crossing a mountain pass
in a snowy forest
at a gas station at night
on a coastal road
in a rainy city
rusting in a field
in a busy harbor
above the clouds
at a small train station
on a frozen lake
in an abandoned garage
on a dirt road
""")

BUILDINGS = words("""
lighthouse on a cliff
cottage with a thatched roof
gothic cathedral
glass skyscraper
wooden cabin
treehouse
castle on a hill
ruined temple in the jungle
pagoda
windmill
victorian greenhouse
stone bridge over a river
brutalist concrete building
victorian mansion
farmhouse
red barn
abandoned factory
train station
observatory
beach hut
tiny house
row of colorful houses
medieval village
futuristic city
floating city
desert fortress
marble palace
wooden pier
lighthouse
clock tower
covered bridge
mountain monastery
harbor town
water tower
domed conservatory
art deco hotel
mid-century modern house
bamboo house on stilts
cliffside village
canal lined with old houses
""")

LANDSCAPES = words("""
snowy mountain range
misty pine forest
bamboo forest
desert dunes
red rock canyon
waterfall
river valley
alpine lake
lavender field
rolling green hills
rice terraces
coral reef
glacier
volcano
tropical beach
rocky coastline
tundra
wildflower meadow
fjord
autumn forest
swamp
salt flats
sea cliffs
crystal cave
frozen lake
quiet harbor
winding country road
olive grove
tea plantation
birch forest
mangrove forest
lagoon
badlands
mossy gorge
terraced vineyard
steppe
oasis
cherry orchard
sunflower field
foggy valley
""")

SKIES = words("""
under a stormy sky
under a starry sky
under the northern lights
under a full moon
under a pink sunset sky
under heavy clouds
under a clear blue sky
under the milky way
with a double rainbow
with drifting fog
under a pale winter sky
with dramatic clouds
""")

INTERIORS = words("""
cozy living room with a fireplace
minimalist kitchen
cluttered artist studio
messy teenager's bedroom
reading nook by a window
scandinavian living room
bathroom with green tiles
old library
small cafe
bakery
flower shop
loft apartment
home office
japanese tea room
hotel lobby
train compartment
laboratory
workshop full of tools
attic
wine cellar
classroom
diner
record store
bookstore
laundromat
greenhouse full of plants
candlelit dining room
bedroom with fairy lights
sunroom
pottery studio
ballet studio
music room with a piano
""")

FANTASY = words("""
dragon sleeping on a hoard of gold
wizard's tower on a cliff
enchanted forest with glowing mushrooms
fairy with dragonfly wings
knight facing a giant dragon
elven city built into giant trees
floating island with waterfalls
crystal cave with an underground lake
goblin market under a bridge
witch's cottage in a swamp
giant turtle carrying a village on its back
phoenix rising from the ashes
mermaid resting on a rock
unicorn in a misty glade
glowing portal in the woods
sorceress casting a spell
griffin perched on a mountain peak
ancient tree with a tiny door
dwarven forge deep underground
haunted castle on a hill
giant mushroom forest
whale swimming through the clouds
stone golem covered in moss
fox spirit with nine tails
ice palace
sunken city
library with floating books
alchemist's workshop
dragon rider above the clouds
forest guardian made of roots and leaves
sea serpent rising from the waves
troll under a bridge
suit of armor overgrown with flowers
ghost ship in a storm
centaur in a meadow
giant octopus attacking a ship
sky city connected by rope bridges
staircase leading to the stars
tiny village inside a hollow tree
moth queen with glowing wings
""")

SCIFI = words("""
space station orbiting a gas giant
astronaut on an alien planet
cyberpunk street at night with neon signs
robot tending a garden
giant mech in a ruined city
spaceship landing in the desert
futuristic city with flying cars
cyborg with glowing blue eyes
research base on an icy moon
derelict spaceship drifting in space
time traveler stepping out of a portal
laboratory full of glowing tubes
alien marketplace
moon base at night
terraformed red planet
hologram of a whale
retro-futuristic diner on the moon
solar-powered city in the desert
tiny robot holding a flower
rover crossing a crater
generation ship with gardens inside
humanoid robot reading a book
hoverbike on a neon highway
biomechanical creature
colony dome on a frozen planet
starship bridge with huge windows
abandoned mech covered in moss
underwater research station
ring-shaped megastructure in orbit
cyberpunk noodle stall in the rain
robot dog on a snowy street
alien jungle with bioluminescent plants
astronaut floating above the earth
black hole over an alien horizon
satellite dish array at night
""")

CREATURES = words("""
dragon
baby dragon
unicorn
phoenix
griffin
mermaid
centaur
goblin
elf
dwarf
troll
golem
fairy
kraken
sea serpent
forest spirit
friendly ghost
giant
werewolf
vampire
robot
cyborg
alien
""")

# ---------------------------------------------------------------- settings and time

SETTINGS = words("""
in a busy market
on a foggy pier
in a quiet library
on a rooftop at night
in a sunflower field
at a train station
on a rainy street
in a small kitchen
in a neon-lit alley
in a snowy village
by a mountain lake
on a sandy beach
in a bamboo forest
in an old bookstore
at a night market
in a greenhouse
on a sailing boat
in a cozy cafe
in the desert
on a cliff above the sea
in an autumn park
under a cherry tree
in a crowded subway car
at a bus stop
in a wheat field
in a vineyard
in the mountains
on a balcony
in a laundromat
on a street corner
in a flooded city
in a moonlit garden
on an empty highway
on a frozen lake
at the edge of a forest
in a field of tall grass
on a wooden dock
in a candlelit room
in a ruined castle
on the deck of a ship
""")

TIMES = words("""
at dawn
at sunrise
in the early morning
at noon
in the afternoon
at golden hour
at dusk
at sunset
at twilight
at blue hour
at night
at midnight
""")

WEATHER = words("""
in the rain
in heavy fog
during a snowstorm
after the rain
in light drizzle
on a windy day
on a hazy summer day
during a thunderstorm
in falling snow
in the mist
""")

SEASONS = words("""
in spring
in summer
in autumn
in winter
in late autumn
in early spring
""")

MOODS = words("""
cozy
serene
melancholic
eerie
dreamy
nostalgic
whimsical
mysterious
peaceful
moody
lonely
joyful
ominous
ethereal
tranquil
chaotic
romantic
gloomy
hopeful
quiet
""")

COLORS = words("""
red
crimson
orange
amber
golden
yellow
emerald
teal
turquoise
cobalt blue
navy
indigo
violet
purple
magenta
pink
pastel pink
beige
ivory
white
black
silver
copper
rust
olive
sage green
mint
""")

MATERIALS = words("""
glass
wood
paper
crystal
jade
wool
clouds
origami paper
brass gears
ice
candy
moss
porcelain
toy bricks
stained glass
marble
smoke
flowers
""")

# ---------------------------------------------------------------- media and styles

PAINT = words("""
oil painting
watercolor painting
watercolor
gouache painting
acrylic painting
pastel drawing
pencil sketch
charcoal drawing
ink drawing
pen and ink illustration
ballpoint pen sketch
colored pencil drawing
digital painting
digital art
concept art
matte painting
impasto oil painting
fresco
tempera painting
ink wash painting
""")

CRAFT = words("""
woodcut print
linocut print
etching
lithograph
screen print
ukiyo-e woodblock print
stained glass window
mosaic
tapestry
embroidery
cross-stitch pattern
paper cut art
layered paper art
origami
needle felted figure
knitted toy
clay sculpture
ceramic figurine
marble statue
bronze sculpture
wood carving
miniature diorama
papercraft
quilt
""")

RENDER = words("""
3d render
isometric 3d render
low poly 3d model
voxel art
clay render
stylized 3d render
cel-shaded 3d render
toy-like 3d render
pixel art
16-bit pixel art
8-bit pixel art
isometric pixel art
""")

ILLUSTRATION = words("""
vector illustration
flat illustration
line art
anime-style illustration
manga-style ink drawing
comic book panel
graphic novel illustration
children's book illustration
storybook illustration
editorial illustration
retro poster
cartoon
chibi drawing
kawaii doodle
concept sketch
""")

# media that fit only some subjects: the shapes that use them pick them on purpose
SPECIAL_ILLUSTRATION = words("""
botanical illustration
scientific illustration
technical drawing
blueprint
architectural rendering
vintage travel poster
album cover art
movie poster
coloring book page
tarot card
""")

PHOTO = words("""
studio photo
film photo
instant photo
analog photo
black and white photo
long exposure photo
macro photo
aerial photo
drone shot
street photography
documentary photo
candid photo
editorial photo
infrared photo
cyanotype
tintype
double exposure photo
phone photo
disposable camera photo
""")

MOVEMENTS = words("""
impressionist
expressionist
cubist
surrealist
pop art
art nouveau
art deco
minimalist
abstract
baroque
renaissance
pointillist
fauvist
constructivist
victorian
gothic
rococo
medieval
mid-century modern
psychedelic
vaporwave
synthwave
cyberpunk
steampunk
solarpunk
dieselpunk
dark fantasy
cottagecore
retro-futurist
film noir
lofi
folk art
""")

# ---------------------------------------------------------------- photography and art terms

LENSES = words("""
35mm lens
50mm lens
85mm lens
24mm wide angle
14mm ultra wide
200mm telephoto
400mm telephoto lens
fisheye lens
macro lens
tilt-shift lens
50mm f/1.8
85mm f/1.4
35mm f/2
100mm macro
""")

APERTURES = words("""
f/1.2
f/1.4
f/1.8
f/2.8
f/4
f/8
f/11
f/16
""")

EXPOSURE = words("""
1/1000s
1/250 sec
1/60s
2 second exposure
30 second exposure
iso 100
ISO 200
iso 400
ISO 800
iso 3200
ISO 6400
""")

CAMERAS = words("""
shot on a dslr
shot on a DSLR
mirrorless camera
medium format camera
large format camera
35mm film
120 film
disposable camera
phone camera
full frame sensor
vintage rangefinder
""")

FILM = words("""
fine film grain
expired film
slide film colors
color negative film
black and white film
cross-processed
light leaks
faded colors
grainy
""")

LIGHTING = words("""
golden hour light
blue hour
soft window light
harsh midday sun
rim light
backlit
volumetric light
god rays
studio lighting
softbox lighting
three-point lighting
neon lighting
candlelight
moonlight
overcast light
dramatic lighting
cinematic lighting
chiaroscuro lighting
split lighting
butterfly lighting
low-key lighting
high-key lighting
natural light
dappled sunlight
warm lamp light
fluorescent light
bioluminescent glow
firelight
hard flash
ring light
colored gels
soft diffused light
side lighting
lens flare
""")

COMPOSITION = words("""
rule of thirds
centered composition
symmetrical composition
close-up
extreme close-up
wide shot
full body shot
medium shot
over the shoulder shot
bird's eye view
worm's eye view
low angle
high angle
dutch angle
aerial view
top-down view
flat lay
negative space
leading lines
framed by a doorway
reflection in a puddle
panoramic
establishing shot
headshot
three-quarter view
profile view
seen from behind
""")

FOCUS = words("""
bokeh
shallow depth of field
deep focus
motion blur
sharp focus
soft focus
tack sharp
background blur
light trails
""")

QUALITY = words("""
highly detailed
ultra detailed
intricate details
intricate
8k
8K
4k
uhd
hd
high resolution
masterpiece
best quality
award-winning
award winning photo
professional
photorealistic
hyperrealistic
realistic
trending
beautiful
stunning
breathtaking
epic
cinematic
volumetric lighting
ray tracing
global illumination
subsurface scattering
physically based rendering
hdr
HDR
sharp
crisp
clean lines
high contrast
vivid colors
muted colors
pastel colors
rich colors
soft colors
moody color grading
teal and orange
warm tones
cool tones
detailed textures
fine details
4k wallpaper
desktop wallpaper
elegant
dramatic
perfect composition
featured
very detailed
super detailed
""")

ART_TERMS = words("""
chiaroscuro
sfumato
impasto
loose brushstrokes
thick brushstrokes
visible brushstrokes
wet-on-wet
hatching
cross-hatching
stippling
limited palette
complementary colors
analogous colors
warm palette
cool palette
monochrome
duotone
soft gradient
golden ratio
atmospheric perspective
one-point perspective
two-point perspective
foreshortening
silhouette
textured paper
rough sketch lines
bold outlines
halftone dots
flat colors
soft shading
cel shading
dramatic perspective
gestural lines
muted earth tones
""")

LIGHT_IN_WORDS = words("""
soft and warm
cold and blue
low and golden
coming through the trees
dim and smoky
bright and clean
flat and gray
coming from a single window
reflected off wet stone
pink and hazy
flickering
""")

TIME_TAGS = words("""
dawn
sunrise
morning
noon
afternoon
golden hour
dusk
sunset
twilight
blue hour
night
rainy
foggy
snowy
stormy
misty
spring
summer
autumn
winter
""")

SURFACES = words("""
on a white background
on a marble surface
on a wooden table
on black velvet
on a concrete floor
on a pastel pink background
on wet sand
on a mossy stone
on a glass shelf
on a linen cloth
""")

SHAPES = words("""
circles
triangles
overlapping rectangles
flowing lines
spirals
waves
dots
jagged shards
concentric rings
soft blobs
""")

PATTERN_THINGS = words("""
lemons
cherries
tiny cats
mushrooms
leaves
seashells
stars and moons
strawberries
paper planes
cacti
koi fish
sunflowers
bees
mountains
teacups
""")

GENRES = words("""
mystery
fantasy
science fiction
romance
horror
adventure
thriller
fairy tale
poetry
cookbook
""")

CONTAINERS = words("""
glass jar
teacup
light bulb
snow globe
pocket watch
bottle
terrarium
walnut shell
""")

TINY_SCENES = words("""
forest
village
ocean with a sailboat
winter cabin
desert with a cactus
city at night
waterfall
lighthouse on an island
campsite
mountain range
""")

CASUAL = words("""
my cat as a medieval king
my dog as an astronaut
a dog but he's a chef
what a city would look like at the bottom of the ocean
the view from a train window at night
a house made entirely of books
the last tree on earth
a very tired dragon
a penguin who wants to fly
a frog sitting on a mushroom
the inside of a cloud
a monster under the bed but friendly
a cat that is also a loaf of bread
the loneliest lighthouse
a sandwich so big it needs a crane
a bear doing taxes
a robot learning to paint
grandma's kitchen on a sunday morning
the moment before it rains
a tiny dragon drinking tea
an owl wearing glasses reading at night
two old men playing chess in a park
a rainy afternoon in a small town
a giant cat sitting on a city
a whale in the sky over a village
the smell of coffee as a picture
a dinosaur at a birthday party
a snail racing a turtle
the end of summer
a forest that grows upside down
""")


# ---------------------------------------------------------------- phrase helpers


def bare(phrase: str) -> str:
    """`phrase` without its leading article, as tag lists write it."""
    return re.sub(r"^(a|an) ", "", phrase)


PLAIN_VEHICLES = ("motorcycle", "tram", "scooter", "bicycle", "sailboat", "canoe", "convertible", "tractor",
                  "hot air balloon", "submarine", "cable car", "pickup truck", "camper van")


# traits that contradict a role ("an elderly teenager", "a bearded girl") are drawn again
AGED_ROLES = ("girl", "boy", "teenager", "grandmother", "grandfather")
BEARDLESS_ROLES = AGED_ROLES[:3] + ("woman", "ballerina", "bride", "queen", "princess", "witch")


def fits(trait: str, role: str) -> bool:
    if trait in ("young", "old", "elderly", "middle-aged", "wrinkled"):
        return role not in AGED_ROLES
    return trait != "bearded" or role not in BEARDLESS_ROLES


def person(d: Draw, attire: float = 0.5) -> str:
    role = d.pick(PERSON_ROLES)
    phrase = role
    if d.chance(0.7):
        trait = d.pick(PERSON_TRAITS)
        while not fits(trait, role):
            trait = d.pick(PERSON_TRAITS)
        phrase = f"{trait} {role}"
    if d.chance(attire):
        phrase += " " + d.pick(PERSON_ATTIRE)
    return article(phrase)


def animal(d: Draw, trait: float = 0.6) -> str:
    name = d.pick(ANIMALS)
    return article(f"{d.pick(ANIMAL_TRAITS)} {name}" if d.chance(trait) else name)


def creature(d: Draw) -> str:
    return article(f"{d.pick(ANIMAL_TRAITS + ('ancient', 'glowing', 'tiny', 'giant'))} {d.pick(CREATURES)}")


def food(d: Draw) -> str:
    return d.pick(FOODS)


def building(d: Draw) -> str:
    return article(d.pick(BUILDINGS))


def landscape(d: Draw) -> str:
    return article(d.pick(LANDSCAPES))


def subject(d: Draw) -> str:
    """Any kind of subject, with its article."""
    kind = d.weighted(
        [
            (5, lambda: person(d)),
            (5, lambda: animal(d)),
            (3, lambda: d.pick(OBJECTS)),
            (2, lambda: food(d)),
            (2, lambda: d.pick(VEHICLES)),
            (2, lambda: building(d)),
            (2, lambda: landscape(d)),
            (2, lambda: article(d.pick(FANTASY))),
            (2, lambda: article(d.pick(SCIFI))),
            (1, lambda: creature(d)),
        ]
    )
    return kind()


def scene(d: Draw) -> str:
    """A subject doing something somewhere."""
    kind = d.weighted(
        [
            (4, lambda: f"{person(d, 0.4)} {d.pick(PERSON_ACTIONS)}"),
            (3, lambda: f"{animal(d)} {d.pick(ANIMAL_ACTIONS)}"),
            (2, lambda: f"{person(d, 0.6)} {d.pick(SETTINGS)}"),
            (2, lambda: f"{animal(d)} {d.pick(SETTINGS)}"),
            (1, lambda: f"{d.pick(VEHICLES)} {d.pick(VEHICLE_SETTINGS)}"),
            (2, lambda: f"{building(d)} {d.pick(TIMES + WEATHER + SEASONS)}"),
            (2, lambda: f"{landscape(d)} {d.pick(SKIES + TIMES)}"),
            (2, lambda: article(d.pick(FANTASY))),
            (2, lambda: article(d.pick(SCIFI))),
            (1, lambda: f"{d.pick(OBJECTS)} {d.pick(SURFACES + FOOD_SETTINGS)}"),
            (1, lambda: f"{food(d)} {d.pick(FOOD_SETTINGS)}"),
        ]
    )
    return kind()


def any_medium(d: Draw) -> str:
    return d.pick(d.weighted([(3, lambda: PAINT), (2, lambda: PHOTO), (2, lambda: ILLUSTRATION),
                              (1, lambda: RENDER), (1, lambda: CRAFT)])())


def style_tag(d: Draw) -> str:
    """A medium, or a movement as an adjective ("art deco style", "surrealist")."""
    if d.chance(0.6):
        return any_medium(d)
    movement = d.pick(MOVEMENTS)
    return d.pick((movement, f"{movement} style", f"{movement} aesthetic", f"in {article(movement)} style"))


def tags(d: Draw, k: int, pools: Sequence[Sequence[str]]) -> list[str]:
    """k distinct tags drawn from the given pools (each tag from a randomly chosen pool); one lens, one
    camera, one framing and at most two lights, as a photographer would write them."""
    out: list[str] = []
    used: Counter[int] = Counter()
    for _ in range(k * 4):
        if len(out) == k:
            break
        pool = pools[d.below(len(pools))]
        tag = d.pick(pool)
        if tag.lower() in (t.lower() for t in out) or used[id(pool)] >= TAG_LIMITS.get(id(pool), k):
            continue
        used[id(pool)] += 1
        out.append(tag)
    return out


def join_tags(d: Draw, parts: Sequence[str]) -> str:
    """Comma-separated, each tag once; a few people leave out the spaces."""
    kept = list(dict.fromkeys(p for p in parts if p))
    return (", " if d.chance(0.93) else ",").join(kept)


# ---------------------------------------------------------------- prompt shapes


def short(d: Draw) -> str:
    """2 to 5 words, the shortest things people type."""
    for _ in range(40):
        form = d.weighted(
            [
                (3, lambda: f"{d.pick(ANIMAL_TRAITS)} {d.pick(ANIMALS)}"),
                (2, lambda: f"{d.pick(ANIMALS)} {d.pick(ANIMAL_ACTIONS)}"),
                (2, lambda: f"{d.pick(LANDSCAPES)} {d.pick(TIMES)}"),
                (2, lambda: f"{d.pick(MOODS)} {d.pick(LANDSCAPES)}"),
                (2, lambda: f"{bare(d.pick(OBJECTS))}, {d.pick(PAINT + RENDER)}"),
                (2, lambda: bare(person(d, 0))),
                (1, lambda: f"{d.pick(PERSON_ROLES)} portrait"),
                (1, lambda: f"{d.pick(CREATURES)} {d.pick(('portrait', 'in the forest', 'at night', 'flying'))}"),
                (1, lambda: f"{d.pick(MOVEMENTS)} {d.pick(BUILDINGS)}"),
                (1, lambda: f"{d.pick(COLORS)} {d.pick(PLAIN_VEHICLES)}"),
                (1, lambda: bare(d.pick(FOODS)) if d.chance(0.5) else d.pick(FOODS)),
                (1, lambda: f"{d.pick(INTERIORS)}"),
                (1, lambda: f"{d.pick(LANDSCAPES)} {d.pick(WEATHER)}"),
                (1, lambda: f"{d.pick(('abstract', 'geometric', 'fluid'))} {d.pick(SHAPES)}"),
                (1, lambda: f"{d.pick(ANIMALS)} {d.pick(('coloring book page', 'tarot card', 'sticker', 'emoji'))}"),
            ]
        )()
        if 2 <= len(form.split()) <= 5:
            return form
    return form


def medium_of(d: Draw) -> str:
    """"watercolor painting of an old fisherman on a foggy pier"."""
    medium = any_medium(d)
    head = d.pick((f"{medium} of", f"{article(medium)} of", f"{medium} of", f"{d.pick(MOODS)} {medium} of"))
    text = f"{head} {scene(d) if d.chance(0.7) else subject(d)}"
    if d.chance(0.4):
        text += ", " + d.pick(MOODS)
    if d.chance(0.35):
        text += ", " + join_tags(d, tags(d, d.between(1, 3), [QUALITY, ART_TERMS, LIGHTING]))
    return text


def subject_with_tags(d: Draw) -> str:
    """"a red fox in the snow, oil painting, highly detailed, soft light"."""
    parts = [scene(d) if d.chance(0.65) else subject(d), style_tag(d)]
    parts += tags(d, d.between(1, 7), [QUALITY, LIGHTING, ART_TERMS, COMPOSITION])
    return join_tags(d, parts)


def long_tags(d: Draw) -> str:
    """A long comma-separated tag list (30+ words): subject first, then everything people stack on."""
    parts = [scene(d)]
    if d.chance(0.5):
        parts.append(d.pick(TIME_TAGS))
    parts.append(style_tag(d))
    if d.chance(0.5):
        parts.append(style_tag(d))
    parts += tags(d, d.between(2, 4), [LIGHTING, COMPOSITION, FOCUS, LENSES])
    parts += tags(d, d.between(3, 7), [QUALITY, ART_TERMS, FILM])
    if d.chance(0.3):
        parts.append(f"{d.pick(COLORS)} and {d.pick(COLORS)} color palette")
    if d.chance(0.2):
        parts.append(d.pick(MOODS) + " atmosphere")
    goal = d.between(24, 44)
    for _ in range(10):
        if len(" ".join(parts).split()) >= goal:
            break
        parts += tags(d, 2, [QUALITY, ART_TERMS, QUALITY])
    return join_tags(d, parts)


def long_sentences(d: Draw) -> str:
    """Two or three full sentences, the way people describe a picture to a friend."""
    medium = any_medium(d)
    mood = d.pick(MOODS)
    first = d.pick(
        (
            f"{article(mood + ' ' + medium)} of {scene(d)} {d.pick(TIMES + WEATHER)}.",
            f"{scene(d)} {d.pick(TIMES + WEATHER + SEASONS)}, done as {article(medium)}.",
            f"Imagine {scene(d)} {d.pick(TIMES + WEATHER)}.",
            f"This is {article(medium)} showing {scene(d)}.",
            f"{article(medium)} of {subject(d)} {d.pick(SETTINGS)} {d.pick(TIMES + SEASONS)}.",
        )
    )
    light = d.pick(LIGHT_IN_WORDS)
    second = d.pick(
        (
            f"The light is {light} and the colors are {d.pick(COLORS)} and {d.pick(COLORS)}.",
            f"Soft {d.pick(COLORS)} tones, the light {light}, with {d.pick(ART_TERMS)}.",
            f"The mood is {mood} and a little {d.pick(MOODS)}, with {d.pick(FOCUS)} in the background.",
            f"Use {d.pick(ART_TERMS)} and a {d.pick(('warm', 'cool', 'muted', 'bright', 'limited'))} palette.",
            f"In the background there is {d.pick(OBJECTS + FOODS + VEHICLES)} and {article(d.pick(LANDSCAPES))}.",
            f"Shot with {article(d.pick(LENSES))} at {d.pick(APERTURES)}, {d.pick(LIGHTING)}.",
        )
    )
    third = d.pick(
        (
            f"{d.pick(COMPOSITION).capitalize()}, {d.pick(QUALITY)}, {d.pick(QUALITY)}.",
            f"Very {d.pick(('detailed', 'calm', 'quiet', 'simple', 'colorful', 'soft'))}, almost like a dream.",
            f"Everything should feel {d.pick(MOODS)} and {d.pick(MOODS)}.",
            f"No text, {d.pick(QUALITY)}.",
            "",
        )
    )
    text = " ".join(s for s in (first, second, third) if s)
    while len(text.split()) < 30:
        text += f" {d.pick(COMPOSITION).capitalize()}, {d.pick(LIGHTING)}, {d.pick(QUALITY)}."
    return text


def imperative(d: Draw) -> str:
    """Requests addressed to the service: "draw a ...", "can you make ..."."""
    ask = d.pick(
        (
            "draw",
            "draw me",
            "paint",
            "make a picture of",
            "make me a picture of",
            "generate an image of",
            "generate",
            "create",
            "create an image of",
            "show me",
            "i want",
            "I want a picture of",
            "can you make",
            "can you draw",
            "please draw",
            "picture of",
            "image of",
            "give me",
            "render",
            "illustrate",
        )
    )
    text = f"{ask} {scene(d) if d.chance(0.6) else subject(d)}"
    if d.chance(0.45):
        medium = any_medium(d)
        text += d.pick((f" as {article(medium)}", f", {medium}", f" in {medium} style", f" like {article(medium)}"))
    if d.chance(0.2):
        text += d.pick((" please", ", make it " + d.pick(MOODS), ", very " + d.pick(("detailed", "cute", "realistic"))))
    return text


PORTRAIT_MEDIA = ("portrait photography", "fashion photography", "studio photo", "film photo", "editorial photo",
                  "oil painting", "charcoal drawing", "black and white photo")
WEATHER_TAGS = ("rainy", "foggy", "snowy", "stormy", "misty", "windy")


def portrait(d: Draw) -> str:
    head = d.pick(
        ("portrait of", "close-up portrait of", "headshot of", "a portrait of", "candid portrait of",
         "environmental portrait of", "profile portrait of", "photo portrait of")
    )
    parts = [f"{head} {person(d, 0.6)}"]
    if d.chance(0.4):
        parts[0] += " " + d.pick(SETTINGS + TIMES)
    parts += tags(d, d.between(2, 5), [LIGHTING, LENSES, FOCUS, CAMERAS, FILM, APERTURES])
    if d.chance(0.5):
        parts.append(d.pick(PORTRAIT_MEDIA))
    return join_tags(d, parts)


def landscape_shot(d: Draw) -> str:
    place = d.pick(LANDSCAPES)
    head = d.weighted(
        [
            (2, lambda: f"{place} {d.pick(TIMES)}"),
            (2, lambda: f"{article(place)} {d.pick(SKIES)}"),
            (1, lambda: f"{article(d.pick(MOODS) + ' view')} of {article(place)} {d.pick(TIMES + SEASONS)}"),
            (1, lambda: f"{place} {d.pick(SEASONS)}, {d.pick(WEATHER_TAGS)}"),
            (1, lambda: f"looking down into {article(place)} {d.pick(TIMES)}"),
        ]
    )()
    parts = [head]
    if d.chance(0.6):
        parts.append(d.pick(("landscape photography", "landscape painting", "matte painting", "aerial photo",
                             "drone shot", "oil painting", "watercolor", "panoramic photo", "film photo")))
    parts += tags(d, d.between(1, 4), [LENSES, LIGHTING, FOCUS, QUALITY, EXPOSURE])
    return join_tags(d, parts)


def interior(d: Draw) -> str:
    room = d.pick(INTERIORS)
    head = d.pick(
        (
            article(room),
            f"{d.pick(MOODS)} {room}",
            f"interior of {article(room)}",
            f"{room}, interior design",
            f"{d.pick(MOVEMENTS)} {room}",
        )
    )
    parts = [head, d.pick(TIMES + WEATHER) if d.chance(0.4) else ""]
    extras = ("interior photography", "magazine photo", "wide angle", "3d render", "isometric view",
              "warm wood and plants", "house plants everywhere")
    parts += tags(d, d.between(1, 4), [LIGHTING, COMPOSITION, QUALITY, extras])
    return join_tags(d, parts)


def product(d: Draw) -> str:
    thing = d.pick(OBJECTS + FOODS)
    head = d.pick(("product photo of", "product shot of", "studio photo of", "commercial photo of", "catalog photo of"))
    parts = [f"{head} {thing} {d.pick(SURFACES)}"]
    parts += tags(d, d.between(2, 4), [("studio lighting", "softbox lighting", "hard shadows", "soft shadows",
                                       "high-key lighting", "colored gels", "reflections"), FOCUS, LENSES, QUALITY])
    if d.chance(0.4):
        parts.append(f"{d.pick(COLORS)} background")
    return join_tags(d, parts)


def food_shot(d: Draw) -> str:
    parts = [f"{food(d)} {d.pick(FOOD_SETTINGS)}"]
    if d.chance(0.7):
        parts.append(d.pick(("food photography", "food photo", "overhead shot", "flat lay", "watercolor",
                             "cookbook illustration", "3d render", "close-up")))
    parts += tags(d, d.between(1, 3), [LIGHTING, FOCUS, LENSES, QUALITY, ("appetizing", "delicious", "fresh",
                                                                         "steam", "crumbs on the table")])
    return join_tags(d, parts)


def fantasy(d: Draw) -> str:
    thing = d.pick(FANTASY)
    head = d.pick((thing, article(thing), f"{d.pick(MOODS)} {thing}", f"{article(thing)} {d.pick(TIMES + WEATHER)}"))
    parts = [head, d.pick(("fantasy art", "dark fantasy", "concept art", "digital painting", "storybook illustration",
                           "oil painting", "matte painting", "fantasy illustration", "3d render", "watercolor"))]
    parts += tags(d, d.between(1, 5), [QUALITY, LIGHTING, ART_TERMS])
    return join_tags(d, parts)


def scifi(d: Draw) -> str:
    thing = d.pick(SCIFI)
    head = d.pick((thing, article(thing), f"{d.pick(MOODS)} {thing}", f"{article(thing)}, {d.pick(MOVEMENTS)}"))
    parts = [head, d.pick(("sci-fi concept art", "science fiction illustration", "retro sci-fi book cover",
                           "digital art", "3d render", "matte painting", "cinematic still", "film still", "pixel art"))]
    parts += tags(d, d.between(1, 5), [QUALITY, LIGHTING, COMPOSITION])
    return join_tags(d, parts)


def character_sheet(d: Draw) -> str:
    who = person(d, 0.8) if d.chance(0.6) else creature(d)
    head = d.pick(("character design of", "character sheet of", "concept art of", "full body character design,",
                   "turnaround sheet of", "character concept:"))
    tail = d.pick(("front and side view", "multiple poses", "full body", "expression sheet", "front, side and back"))
    return join_tags(d, [f"{head} {who}", tail, d.pick(("white background", "plain background", "gray background")),
                         d.pick(PAINT + RENDER + ILLUSTRATION)])


def graphic(d: Draw) -> str:
    """Stickers, logos, icons and prints: small commercial art people ask for every day."""
    thing = animal(d, 0.5) if d.chance(0.6) else d.pick(OBJECTS + FOODS)
    return d.weighted(
        [
            (2, lambda: f"cute sticker of {thing}, white border, {d.pick(('vector', 'kawaii', 'flat', 'die cut'))}"),
            (2, lambda: f"minimalist logo of {thing}, {d.pick(('flat', 'line art', 'two colors', 'geometric'))}, "
                        f"{d.pick(('white background', 'simple', 'vector', 'clean lines'))}"),
            (1, lambda: f"app icon of {thing}, rounded square, {d.pick(('glossy', 'flat design', 'soft gradient'))}"),
            (1, lambda: f"t-shirt design, {thing}, {d.pick(('retro', 'bold outlines', 'distressed', 'screen print'))}"),
            (1, lambda: f"emoji of {thing}"),
            (1, lambda: f"tattoo design of {thing}, {d.pick(('fine line', 'traditional', 'blackwork', 'dotwork'))}"),
            (1, lambda: f"{thing} enamel pin design"),
        ]
    )()


def pattern(d: Draw) -> str:
    things = d.pick(PATTERN_THINGS)
    return join_tags(
        d,
        [
            d.pick((f"seamless pattern of {things}", f"repeating pattern with {things}", f"{things} wallpaper pattern",
                    f"tileable texture of {things}")),
            d.pick(PAINT + ("vector", "flat illustration", "block print")),
            f"{d.pick(COLORS)} and {d.pick(COLORS)}" if d.chance(0.6) else d.pick(("pastel colors", "muted colors")),
        ],
    )


def weighted_syntax(d: Draw) -> str:
    """The emphasis syntax some front ends read, "(masterpiece:1.2)": people paste it everywhere."""
    weight = d.pick(("1.1", "1.2", "1.3", "1.4", "0.8"))
    main = scene(d)
    parts = [d.pick(("(masterpiece)", "(masterpiece:1.2)", "((best quality))", "(best quality:1.2)", "masterpiece")),
             d.pick((f"({main}:{weight})", f"(({main}))", main))]
    parts += [f"({t})" if d.chance(0.3) else t for t in tags(d, d.between(2, 5), [QUALITY, LIGHTING, ART_TERMS])]
    return join_tags(d, parts)


ODD_FEATURES = ("butterfly wings", "antlers made of coral", "a tiny crown", "a shell like a snail", "glowing spots")
SMALL_SHOPS = ("bakery", "flower shop", "bookstore", "tea house", "tiny post office")


def whimsical(d: Draw) -> str:
    beast = d.pick(ANIMALS)
    return d.weighted(
        [
            (2, lambda: f"{article(beast)} made of {d.pick(MATERIALS)}"),
            (2, lambda: f"{article(beast)} dressed as {article(d.pick(PERSON_ROLES))}"),
            (1, lambda: f"{article(beast)} astronaut floating in space"),
            (1, lambda: f"{d.pick(OBJECTS)} shaped like {article(beast)}"),
            (2, lambda: f"tiny {d.pick(TINY_SCENES)} inside {article(d.pick(CONTAINERS))}"),
            (1, lambda: f"half {beast}, half {d.pick(ANIMALS)}"),
            (1, lambda: f"{article(beast)} with {d.pick(ODD_FEATURES)}"),
            (1, lambda: f"{article(beast)} running a {d.pick(SMALL_SHOPS)}"),
        ]
    )() + (", " + style_tag(d) if d.chance(0.6) else "")


def architecture(d: Draw) -> str:
    parts = [f"{building(d) if d.chance(0.6) else d.pick(BUILDINGS)} {d.pick(TIMES + WEATHER + SEASONS + SKIES)}"]
    parts.append(d.pick(("architectural photography", "architectural rendering", "architecture", "concept art",
                         "isometric", "ink sketch", "watercolor", "wide angle", "3d render", "film photo")))
    parts += tags(d, d.between(0, 3), [LENSES, LIGHTING, COMPOSITION, QUALITY])
    return join_tags(d, parts)


def abstract(d: Draw) -> str:
    colors = f"{d.pick(COLORS)} and {d.pick(COLORS)}"
    return d.weighted(
        [
            (2, lambda: f"abstract {d.pick(PAINT)} of {d.pick(SHAPES)} in {colors}"),
            (1, lambda: f"swirling {colors} ink in water, macro"),
            (1, lambda: f"geometric composition, {d.pick(SHAPES)}, {colors}, minimal"),
            (1, lambda: f"fluid art, {colors}, {d.pick(('gold leaf', 'marbling', 'cells', 'glossy resin'))}"),
            (1, lambda: f"{d.pick(MOODS)} abstract landscape, {colors}, {d.pick(ART_TERMS)}"),
            (1, lambda: f"generative art of {d.pick(SHAPES)}, {d.pick(('noise', 'flow field', 'grid', 'particles'))}"),
        ]
    )()


def macro(d: Draw) -> str:
    small = d.pick(("a dewdrop on a leaf", "frost on a window", "a bee covered in pollen", "the eye of a chameleon",
                    "moss and tiny mushrooms", "a snowflake", "the texture of tree bark", "soap bubbles",
                    "a dragonfly wing", "sand grains", "rust on metal", "the seeds of a dandelion",
                    "water droplets on a spider web", "peeling paint", "a feather", "the inside of a seashell"))
    return join_tags(d, [d.pick((f"macro photo of {small}", f"close-up of {small}", f"extreme close-up, {small}",
                                 small)), *tags(d, d.between(1, 3), [FOCUS, LIGHTING, ("100mm macro", "macro lens",
                                                                                    "high detail", "focus stacking")])])


def vehicle(d: Draw) -> str:
    ride = d.pick(VEHICLES)
    parts = [f"{ride} {d.pick(VEHICLE_SETTINGS)}"]
    parts.append(style_tag(d))
    parts += tags(d, d.between(0, 3), [LIGHTING, LENSES, FOCUS, QUALITY, FILM])
    return join_tags(d, parts)


SPECIMENS = ("fern", "orchid", "mushroom", "beetle", "moth", "seashell", "sunflower", "oak leaf")
EVENTS = ("jazz night", "summer festival", "science fair", "flower show", "film festival", "farmers market")


def cover(d: Draw) -> str:
    return d.weighted(
        [
            (2, lambda: f"book cover for {article(d.pick(GENRES))} novel, {scene(d)}, {d.pick(PAINT + ILLUSTRATION)}"),
            (1, lambda: f"{d.pick(('vintage travel poster', 'movie poster'))} of {landscape(d)}"),
            (1, lambda: f"{d.pick(('botanical', 'scientific'))} illustration of {article(d.pick(SPECIMENS))}"),
            (1, lambda: f"{d.pick(('blueprint', 'technical drawing', 'cutaway diagram'))} of {d.pick(VEHICLES)}"),
            (1, lambda: f"album cover, {scene(d)}, {d.pick(MOVEMENTS)}"),
            (1, lambda: f"poster for {article(d.pick(EVENTS))}, {d.pick(MOVEMENTS)}, "
                        f"{d.pick(('room for a title', 'no text', 'simple shapes', 'halftone dots'))}"),
            (1, lambda: f"greeting card with {subject(d)}, {d.pick(PAINT)}"),
        ]
    )()


def mapping(d: Draw) -> str:
    realm = d.pick(("island", "coastline with mountains", "kingdom with three rivers", "archipelago", "desert realm"))
    town = d.pick(("island town", "mountain village", "harbor", "farm", "space colony"))
    place = d.pick(("forest", "city park", "seaside village", "treasure island"))
    return d.pick(
        (
            f"fantasy map of {article(realm)}, parchment, ink",
            f"isometric map of a small {town}",
            f"hand-drawn map of {article(place)}, {d.pick(PAINT)}",
            f"top-down game map, {d.pick(LANDSCAPES)}, {d.pick(RENDER)}",
        )
    )


def pair(d: Draw) -> str:
    """Two subjects together."""
    together = d.pick(("sharing an umbrella", "sitting on a bench", "walking side by side", "having a picnic",
                       "watching the sunset", "playing in the snow", "asleep together", "reading together"))
    return join_tags(d, [f"{person(d, 0.4)} and {animal(d, 0.4)} {together} {d.pick(SETTINGS + TIMES)}",
                         style_tag(d) if d.chance(0.6) else ""])


def styled_as(d: Draw) -> str:
    """Style named by medium, never by who made it: "in the style of an old woodcut print"."""
    medium = d.pick(CRAFT + ILLUSTRATION + PHOTO + PAINT)
    old = d.pick(("", "", "old ", "vintage ", "classic ", "early ", "simple "))
    return f"{scene(d) if d.chance(0.6) else subject(d)} in the style of {article(old + medium)}"


def casual(d: Draw) -> str:
    text = d.pick(CASUAL)
    if d.chance(0.4):
        text += ", " + style_tag(d)
    return text


def holiday(d: Draw) -> str:
    return d.pick(
        (
            f"a snowy village at christmas, {d.pick(PAINT)}",
            f"halloween pumpkins on a porch {d.pick(TIMES)}, {d.pick(('cozy', 'spooky', 'film photo'))}",
            f"lanterns floating on a river at a festival, {d.pick(LIGHTING)}",
            f"a new year's eve party on a rooftop, fireworks, {d.pick(FOCUS)}",
            f"easter eggs in the grass, {d.pick(('pastel colors', 'macro photo', 'watercolor'))}",
            f"a family dinner on thanksgiving, {d.pick(('warm light', 'film photo', 'oil painting'))}",
            f"a birthday party in a garden, {d.pick(('balloons', 'confetti', 'candid photo'))}",
            f"a wedding under an oak tree {d.pick(TIMES)}, {d.pick(('film photo', 'soft light', 'watercolor'))}",
        )
    )


def wildlife(d: Draw) -> str:
    parts = [f"{animal(d, 0.3)} {d.pick(ANIMAL_ACTIONS[:13] + SETTINGS[-8:])}",
             d.pick(("wildlife photography", "nature documentary still", "wildlife photo", "national park photo"))]
    parts += tags(d, d.between(1, 3), [("400mm telephoto lens", "200mm telephoto", "1/1000s", "f/4", "f/5.6"),
                                       FOCUS, LIGHTING, QUALITY])
    return join_tags(d, parts)


TAG_LIMITS = {id(LENSES): 1, id(APERTURES): 1, id(CAMERAS): 1, id(COMPOSITION): 1, id(EXPOSURE): 1, id(FILM): 1,
              id(LIGHTING): 2, id(FOCUS): 2}

SHAPES_OF_PROMPTS: list[tuple[float, Callable[[Draw], str]]] = [
    (14, short),
    (9, medium_of),
    (10, subject_with_tags),
    (11, long_tags),
    (7, long_sentences),
    (6, imperative),
    (6, portrait),
    (5, landscape_shot),
    (4, interior),
    (3, product),
    (2, wildlife),
    (3, food_shot),
    (4, fantasy),
    (4, scifi),
    (2, character_sheet),
    (3, graphic),
    (1.5, pattern),
    (2, weighted_syntax),
    (3, whimsical),
    (3, architecture),
    (2, abstract),
    (1.5, macro),
    (2, vehicle),
    (1.5, cover),
    (1, mapping),
    (2, pair),
    (2, styled_as),
    (1.5, casual),
    (0.7, holiday),
]


# ---------------------------------------------------------------- how people type


def retype(d: Draw, text: str) -> str:
    """Casing, punctuation and the odd typo: most people type lowercase, some write sentences."""
    text = re.sub(r"\s+", " ", text).strip(" ,")
    case = d.weighted([(60, lambda: "lower"), (33, lambda: "sentence"), (7, lambda: "tags")])()
    sentences = re.search(r"[.!?] ", text) is not None
    if case == "sentence" or sentences:
        text = re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    elif case == "tags":
        text = re.sub(r"(^|, ?)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    if sentences and not text.endswith("."):
        text += "."
    elif not sentences and case == "sentence" and d.chance(0.15):
        text += "."
    if d.chance(0.035):
        text = typo(d, text)
    return text


def typo(d: Draw, text: str) -> str:
    """Swap, drop or double one letter of one longer word."""
    spots = [m for m in re.finditer(r"[a-z]{6,}", text)]
    if not spots:
        return text
    m = spots[d.below(len(spots))]
    word, i = m.group(), d.between(1, len(m.group()) - 2)
    kind = d.below(3)
    if kind == 0:
        word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind == 1:
        word = word[:i] + word[i + 1 :]
    else:
        word = word[:i] + word[i] + word[i:]
    return text[: m.start()] + word + text[m.end() :]


def normalized(text: str) -> str:
    """The duplicate key: case and spacing do not make a new prompt (memguard.prompts_corpus agrees)."""
    return re.sub(r"\s*,\s*", ", ", re.sub(r"\s+", " ", text.casefold())).strip()


def generate(seed: int = SEED, target: int = TARGET) -> list[str]:
    d = Draw(seed)
    prompts: list[str] = []
    seen: set[str] = set()
    openers: Counter[str] = Counter()
    for _ in range(target * 50):
        if len(prompts) == target:
            break
        text = retype(d, d.weighted(SHAPES_OF_PROMPTS)(d))
        key = normalized(text)
        opener = " ".join(re.findall(r"[\w'/-]+", key)[:3])
        if key in seen or len(text) > MAX_CHARS or openers[opener] >= PREFIX_CAP:
            continue
        seen.add(key)
        openers[opener] += 1
        prompts.append(text)
    if len(prompts) < target:
        raise SystemExit(f"only {len(prompts)} distinct prompts; widen the vocabulary")
    return prompts


def stats(prompts: Sequence[str]) -> str:
    tokens = [re.findall(r"[\w'/-]+", p.casefold()) for p in prompts]
    lengths = sorted(len(t) for t in tokens)
    chars = sorted(len(p) for p in prompts)

    def share(low: int, high: float) -> str:
        return f"{sum(low <= n <= high for n in lengths) / len(lengths):.1%}"

    q = statistics.quantiles(lengths, n=10)
    return "\n".join(
        [
            f"prompts: {len(prompts)}",
            f"distinct words: {len({w for t in tokens for w in t})}",
            f"distinct first 3 words: {len({' '.join(t[:3]) for t in tokens})}",
            f"words per prompt: min {lengths[0]}, p10 {q[0]:.0f}, median {statistics.median(lengths):.0f}, "
            f"p90 {q[-1]:.0f}, max {lengths[-1]}, mean {statistics.mean(lengths):.1f}",
            f"characters per prompt: min {chars[0]}, median {statistics.median(chars):.0f}, max {chars[-1]}",
            f"2-5 words: {share(2, 5)}, 6-14: {share(6, 14)}, 15-29: {share(15, 29)}, 30+: {share(30, float('inf'))}",
            f"all lowercase: {sum(p == p.lower() for p in prompts) / len(prompts):.1%}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the prompts")
    parser.add_argument("--seed", type=int, default=SEED, help="change only to compare, the shipped file uses SEED")
    parser.add_argument("--stats", action="store_true", help="print diversity figures")
    args = parser.parse_args(argv)
    prompts = generate(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(("\n".join(prompts) + "\n").encode("utf-8"))
    if args.stats:
        print(stats(prompts), file=sys.stderr)


if __name__ == "__main__":
    main()
