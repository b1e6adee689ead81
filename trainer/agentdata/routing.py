"""Routing data for the mother: which child serves an utterance.

Line: {"text", "child": "home"|"calc"|"marathi"|"fortunes"|null, "category": source}. null means
no child serves it (weather, alarms, messages, music, trivia ...): the mother learns it as the
reject label `_none` (bulletd.router.REJECT_LABEL), which takes probability but is never a route,
so such an utterance gets the fallback or `no_route`.

Sources per label:
  * home, calc: the agent generators of the same split (so the test split holds their unseen
    phrasings);
  * marathi, fortunes: prompt-sized pieces of the children's corpora (`sources`, NAME=FILE.jsonl;
    the test split takes other records than the training split: record index % 10 == 0 vs != 0),
    plus requests written here ("tell me my fortune", "मराठीत एक गोष्ट सांग");
  * null: requests written here, in English and Marathi, disjoint pools per split.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from trainer.agentdata import check_split

REJECT = "_none"
LABELS = ("home", "calc", "marathi", "fortunes", None)

REQUESTS = {
    "train": {
        "fortunes": ["tell me my fortune", "tell me a fortune", "give me a fortune cookie", "what does my future hold",
                     "say something wise", "give me a quote", "a funny quote please", "tell me a joke",
                     "fortune", "quote of the day", "something witty about {topic}", "a quote about {topic}",
                     "an epigram about {topic}", "say something clever about {topic}", "what is my fortune today"],
        "marathi": ["मराठीत एक गोष्ट सांग", "मराठीत लिहा", "एक कविता लिही", "पुढे लिहा:", "या वाक्याचे पुढे लिहा",
                    "नमस्कार, तुम्ही कसे आहात?", "फाइल उघडा", "सेटिंग्ज बदला", "कृपया पुन्हा प्रयत्न करा"],
        None: ["what's the weather today", "will it rain tomorrow", "set an alarm for {n} am", "set a timer for {n} minutes",
               "play some music", "play {song} on spotify", "call mom", "send a message to {person}",
               "what time is it", "what's the date today", "who won the match yesterday", "read me the news",
               "translate hello into french", "how do i get to the station", "add milk to my shopping list",
               "remind me to call {person} at {n}", "who is the president of {country}", "what is the capital of {country}",
               "how tall is mount everest", "order a pizza", "book a cab to the airport", "what's on my calendar",
               "open youtube", "take a photo", "how are you", "what's your name", "good morning",
               "आज हवामान कसे आहे", "उद्या पाऊस पडेल का", "सकाळी {n} चा अलार्म लाव", "{n} मिनिटांचा टायमर लाव",
               "गाणे लाव", "आईला फोन कर", "{person_mr}ला मेसेज पाठव", "किती वाजले", "आज कोणती तारीख आहे",
               "बातम्या वाच", "स्टेशनला कसे जायचे", "यादीत दूध लिही", "{country_mr}ची राजधानी कोणती",
               "कॅब बुक कर", "पिझ्झा मागव", "फोटो काढ", "तू कसा आहेस", "तुझे नाव काय"],
    },
    "test": {
        "fortunes": ["predict my future", "got any wisdom for me", "cheer me up with a saying", "a proverb about {topic}",
                     "share a witty line on {topic}", "what do the stars say about me"],
        "marathi": ["मराठी मजकूर पुढे चालू ठेवा", "एक छोटा निबंध लिहा", "यापुढील वाक्य पूर्ण करा", "मराठीत उत्तर द्या"],
        None: ["is it going to be sunny", "wake me up at {n}", "start a {n} minute countdown", "put on some jazz",
               "ring {person}", "text {person} that i am late", "tell me the headlines", "what day is it",
               "how do you say thank you in spanish", "navigate to the nearest petrol pump", "who wrote hamlet",
               "how far is the moon", "buy bread online", "schedule a meeting at {n}", "what's trending now",
               "बाहेर थंडी आहे का", "मला {n} वाजता उठव", "जुनी गाणी ऐकव", "{person_mr}ला कॉल लाव", "आजचा वार कोणता",
               "ताज्या बातम्या सांग", "जवळचा पेट्रोल पंप कुठे आहे", "हॅम्लेट कोणी लिहिले", "ऑनलाइन भाजी मागव"],
    },
}
# requests no child serves, composed from (frame, slot) pools: disjoint frames per split
NONE_FRAMES = {
    "train": ["what's the weather in {city}", "will it rain in {city} tomorrow", "set an alarm for {n} am",
              "set a timer for {n} minutes", "play {music}", "call {person}", "send a message to {person}",
              "email {person} about {thing}", "what time is it in {city}", "who won the {sport} match",
              "read me the news about {topic}", "translate {phrase} into {lang}", "how do i get to {place}",
              "add {food} to my shopping list", "remind me to {task} at {n}", "who is the president of {country}",
              "what is the capital of {country}", "tell me about {topic}", "search the web for {topic}",
              "order {food}", "book a table at {place}", "open {app}", "take a photo", "how are you",
              "what's your name", "good morning", "define {word}", "explain {topic}", "show me pictures of {thing}",
              "{city}मध्ये आज हवामान कसे आहे", "उद्या {city}मध्ये पाऊस पडेल का", "सकाळी {n} चा अलार्म लाव",
              "{n} मिनिटांचा टायमर लाव", "{music_mr} ऐकव", "{person_mr}ला फोन कर", "{person_mr}ला मेसेज पाठव",
              "किती वाजले", "आज कोणती तारीख आहे", "{topic_mr}बद्दल बातम्या वाच", "{place_mr}ला कसे जायचे",
              "यादीत {food_mr} लिही", "{country_mr}ची राजधानी कोणती", "{place_mr}साठी कॅब बुक कर",
              "{food_mr} मागव", "फोटो काढ", "तू कसा आहेस", "तुझे नाव काय", "{topic_mr} म्हणजे काय",
              "{app}उघड"],
    "test": ["is it going to be sunny in {city}", "wake me up at {n}", "start a {n} minute countdown",
             "put on {music}", "ring {person}", "text {person} that i am late", "tell me the headlines on {topic}",
             "what day is it", "how do you say {phrase} in {lang}", "navigate to {place}", "who wrote {thing}",
             "how far is {city} from here", "buy {food} online", "schedule a meeting with {person} at {n}",
             "what's trending about {topic}", "give me directions to {place}", "launch {app}",
             "बाहेर {city}मध्ये थंडी आहे का", "मला {n} वाजता उठव", "{music_mr} वाजव", "{person_mr}ला कॉल लाव",
             "आजचा वार कोणता", "{topic_mr}च्या ताज्या बातम्या सांग", "जवळचा {place_mr} कुठे आहे",
             "{thing_mr} कोणी लिहिले", "ऑनलाइन {food_mr} मागव", "{person_mr}सोबत मीटिंग ठरव"],
}
# more requests no child serves, composed as (verb, object) and (question word, noun): training only
NONE_VERBS = ["play", "call", "text", "email", "search for", "find", "show me", "book", "order", "buy", "schedule",
              "navigate to", "translate", "define", "spell", "read", "send", "share", "download", "install",
              "track", "record", "stream", "watch", "look up", "google", "pay", "cancel", "message", "video call"]
NONE_NOUNS = ["a taxi", "my flight", "the train to pune", "a doctor's appointment", "movie tickets", "a new phone",
              "my email", "the weather", "the news", "a recipe for dal", "cheap hotels", "my package", "the score",
              "a song", "a podcast", "my calendar", "the traffic", "my bank balance", "a birthday gift",
              "the nearest cafe", "my notes", "the word hello", "a video", "the match", "my photos", "an uber",
              "a plumber", "the electricity bill", "the meaning of life", "wikipedia", "my friend"]
NONE_QUESTIONS = ["who is", "what is", "where is", "when is", "why is", "who invented", "what does", "where can i find",
                  "is there", "do you know", "can you explain", "what's the best"]
NONE_Q_NOUNS = ["the tallest building", "einstein", "the moon", "the next holiday", "a good restaurant",
                "the sky blue", "a black hole", "the best phone", "the meaning of karma", "the speed of light",
                "the world cup", "shah rukh khan", "the election result", "the price of gold", "my horoscope sign"]
NONE_MR = ["{x} शोध", "{x} दाखव", "{x} बुक कर", "{x} मागव", "{x} पाठव", "{x} कोण आहे", "{x} कुठे आहे",
           "{x} कधी आहे", "{x} बद्दल माहिती दे", "{x} डाउनलोड कर"]
NONE_MR_NOUNS = ["रिक्षा", "विमानाचे तिकीट", "डॉक्टरची वेळ", "सिनेमाची तिकिटे", "नवा फोन", "माझा ईमेल",
                 "आजच्या बातम्या", "वरणाची रेसिपी", "स्वस्त हॉटेल", "माझे पार्सल", "क्रिकेटचा स्कोअर", "गाणे",
                 "माझे कॅलेंडर", "रहदारी", "बँकेतील शिल्लक", "वाढदिवसाची भेट", "जवळचे कॅफे", "व्हिडिओ",
                 "सोन्याचा भाव", "सचिन तेंडुलकर", "पुढची सुट्टी", "चंद्र", "शिवाजी महाराज", "लोकल ट्रेन"]


def _none_train(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return f"{rng.choice(NONE_VERBS)} {rng.choice(NONE_NOUNS)}"
    if r < 0.6:
        return f"{rng.choice(NONE_QUESTIONS)} {rng.choice(NONE_Q_NOUNS)}"
    return rng.choice(NONE_MR).replace("{x}", rng.choice(NONE_MR_NOUNS))


FILL = {"topic": ["love", "life", "work", "money", "politics", "marriage", "computers", "friends", "time", "food",
                  "cricket", "the elections", "black holes", "the stock market", "climate change", "space travel"],
        "song": ["despacito", "bohemian rhapsody", "lata mangeshkar", "the beatles"],
        "music": ["some music", "my playlist", "a podcast", "jazz", "old hindi songs", "despacito", "the beatles"],
        "music_mr": ["गाणी", "भजन", "लता मंगेशकरची गाणी", "पॉडकास्ट"],
        "person": ["ravi", "anita", "john", "maya", "dad", "my boss", "the doctor", "priya"],
        "person_mr": ["रवी", "अनिता", "माया", "बाबा", "ताई", "आई", "डॉक्टर"],
        "country": ["france", "japan", "india", "brazil", "kenya", "canada", "egypt"],
        "country_mr": ["फ्रान्स", "जपान", "भारत", "ब्राझील", "कॅनडा"],
        "city": ["pune", "mumbai", "london", "delhi", "nagpur", "paris", "tokyo"],
        "sport": ["cricket", "football", "hockey", "tennis"],
        "phrase": ["good night", "thank you", "where is the station", "i am hungry"],
        "lang": ["french", "spanish", "hindi", "german", "japanese"],
        "place": ["the airport", "the station", "the nearest hospital", "a pharmacy", "the mall", "an atm"],
        "place_mr": ["स्टेशन", "विमानतळ", "दवाखाना", "बँक", "बाजार", "पेट्रोल पंप"],
        "food": ["milk", "bread", "a pizza", "eggs", "biryani", "coffee beans"],
        "food_mr": ["दूध", "भाजी", "पिझ्झा", "अंडी", "पोहे"],
        "task": ["pay the bill", "buy milk", "water the plants", "call the bank"],
        "thing": ["hamlet", "the taj mahal", "my tax return", "a red car", "the meeting"],
        "thing_mr": ["श्यामची आई", "गीतांजली", "ययाति"],
        "topic_mr": ["क्रिकेट", "निवडणूक", "शेअर बाजार", "हवामान बदल", "अंतराळ"],
        "word": ["serendipity", "entropy", "democracy", "algorithm"],
        "app": ["youtube", "whatsapp", "the camera", "maps", "gmail"]}
# common words in both languages: training home, calc and null lines get a few of them around the
# request (never the test split's filler words), so that everyday English or Marathi around a
# command is not taken for the sign of the fortunes or marathi child
COMMON = ("the a an and or but so if then now just also very really please okay hey well oh ah hmm "
          "you your me my we our i it is are was be do did can will would should could what how why when "
          "where which who this that these those here there some any all more much many one two time "
          "today again still maybe sure yes no thanks friend quick fast little bit kind nice good great "
          "आता जरा बघ ना हो रे गं की पण आणि तर मग मला तुला आपण काय कसे कधी कुठे हे ते एक थोडा लवकर "
          "नक्की खरं छान बरं अहो").split()


def _wrap(rng: random.Random, text: str, banned: set) -> str:
    words = [w for w in COMMON if w not in banned]
    pre = " ".join(rng.choice(words) for _ in range(rng.randint(0, 3)))
    post = " ".join(rng.choice(words) for _ in range(rng.randint(0, 3)))
    return " ".join(x for x in (pre, text, post) if x)


def _test_fillers() -> set:
    from trainer.agentdata import calc, home

    out = set()
    for mod in (home, calc):
        for d in (mod.PRE["test"], mod.POST["test"]):
            for fs in d.values():
                for f in fs:
                    out.update(f.replace(",", " ").replace(":", " ").replace("!", " ").split())
    return out


# fillers people wrap any request in: the home and calc lines of the training split get them too,
# so the mother does not take a filler word for a child's sign
WRAP = {"pre": ["", "", "", "hey ", "ok ", "listen, ", "um ", "so ", "can you please ", "i said ", "ऐक, ", "हे "],
        "post": ["", "", "", " please", " thank you", " right now", " ok", " ना", " बघ"]}


def _fill(rng: random.Random, t: str) -> str:
    for k, vals in FILL.items():
        t = t.replace("{" + k + "}", rng.choice(vals))
    return t.replace("{n}", str(rng.randint(1, 12)))


def _corpus_prompts(path, split: str, rng: random.Random, max_chars: int = 80):
    texts = []
    with open(path, encoding="utf-8") as fh:
        for i, s in enumerate(fh):
            if (i % 10 == 0) != (split == "test") or not s.strip():
                continue
            try:
                t = json.loads(s).get("text")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(t, str) and t.strip():
                texts.append(t)
    if not texts:
        raise ValueError(f"{path}: no usable {{\"text\": ...}} record for the {split} split")
    while True:
        words = rng.choice(texts).split()
        start = rng.randrange(0, max(1, len(words) // 2))
        out = []
        for w in words[start:]:
            if out and len(" ".join(out + [w])) > max_chars:
                break
            out.append(w)
        if out:
            yield " ".join(out)


def generate(split: str = "train", n: int = 1000, seed: int = 0, sources: dict | None = None):
    """n lines, labels drawn evenly among home, calc, null and the text children in `sources`."""
    check_split(split)
    from trainer.agentdata import calc, home

    sources = sources or {}
    for name in sources:
        if name not in ("marathi", "fortunes"):
            raise ValueError(f"routing sources are marathi and fortunes, got {name!r}")
        if not Path(sources[name]).is_file():
            raise ValueError(f"routing source {name}: {sources[name]} does not exist")
    rng = random.Random(f"routing/{split}/{seed}")
    gens = {"home": home.generate(split, n, seed), "calc": calc.generate(split, n, seed)}
    corpora = {name: _corpus_prompts(p, split, random.Random(f"{name}/{split}/{seed}")) for name, p in sources.items()}
    labels = ["home", "calc", None] + sorted(sources)
    banned = _test_fillers()
    for _ in range(n):
        lab = rng.choice(labels)
        if lab in ("home", "calc"):
            text = next(gens[lab])["text"]
            if split == "train" and rng.random() < 0.3:
                text = rng.choice(WRAP["pre"]) + text + rng.choice(WRAP["post"])
            if split == "train" and rng.random() < 0.4:
                text = _wrap(rng, text, banned)
            yield {"text": text, "child": lab, "category": lab}
        elif lab is None:
            frames = REQUESTS[split][None] + NONE_FRAMES[split]
            if split == "train" and rng.random() < 0.5:
                text = _none_train(rng)
            else:
                text = _fill(rng, rng.choice(frames))
            if split == "train" and rng.random() < 0.3:
                text = rng.choice(WRAP["pre"]) + text + rng.choice(WRAP["post"])
            if split == "train" and rng.random() < 0.4:
                text = _wrap(rng, text, banned)
            yield {"text": text, "child": None, "category": "none"}
        elif rng.random() < 0.2:
            yield {"text": _fill(rng, rng.choice(REQUESTS[split][lab])), "child": lab, "category": lab + "/request"}
        else:
            yield {"text": next(corpora[lab]), "child": lab, "category": lab}
