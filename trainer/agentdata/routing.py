"""Routing data for the mother: which child serves an utterance.

Line: {"text", "child": "home"|"calc"|"marathi"|"fortunes"|null, "category": source}. null means
no child serves it (weather, alarms, messages, music, trivia ...): the mother learns it as the
reject label `_none` (bulletd.router.REJECT_LABEL), which takes probability but is never a route,
so such an utterance gets the fallback or `no_route`.

Splits: `train` (the mother's training data), `dev` (to choose the threshold: the agent generators'
train split with other seeds, half of those lines re-phrased in home and calc frames of its own
(DEV_HOME_EN, DEV_HOME_MR, DEV_CALC_FRAMES), and request and reject pools of its own) and `test` (the held-out
figures: the agent generators' test split and the test pools below). The three draw their
requests from disjoint pools, and no train or dev pool holds a word that only the test phrasings
use (`banned_words`, checked by tests). The test split is generated exactly as before the train and
dev pools grew (TEST_FILL, the order of NONE_FRAMES["test"]), so its figures stay comparable.

Train lines (and, more often, dev's home and calc lines) also get stray words that say nothing of
the label: common words and typos (trainer.agentdata.noise) and words of the corpora's own slice
in home, calc and reject lines, made-up words in lines of every label, so that an unknown word does
not push the mother towards the labels with the widest vocabulary (fortunes, marathi, the reject
class). In training the corpus words are drawn by the square root of their count (`_Vocab`), so
the words the corpora use most turn up in the other labels' lines too, and some reject lines have a
word swapped for one (`_swap_word`): a request's shape, not a corpus word, says it is a request.

Sources per label:
  * home, calc: the agent generators (`train` for train and dev, `test` for test). Training lines
    are also re-phrased here from the line's call (`_home_paraphrase`, `_calc_paraphrase`): other
    verbs and frames, the verb dropped, a device named with no verb, fillers, typos; so the mother
    learns what a home command or a sum is about (a device, an area; numbers and operators), not
    one generator's verbs;
  * marathi, fortunes: prompt-sized pieces of the children's corpora (`sources`, NAME=FILE.jsonl;
    record index % 10 == 0 for test, == 5 for dev, the rest for train), plus requests for the
    child ("tell me my fortune", "मराठीत एक गोष्ट सांग"). In training, a fifth of the Marathi
    pieces are one to three words (titles, place names, interface strings: SHORT), and a corpus
    piece loses the words that only the test split's phrasings use (`_drop_words`): otherwise
    such a word ("would", "check", "करून", "लगेच") would be a sign of fortunes or marathi alone,
    and a home command or a sum that says it would go to a text child;
  * null: requests composed here from frames and slot words, in English, Marathi and mixed:
    assistant requests (NONE_FRAMES, GENERIC, NONE_VERBS x NONE_NOUNS), requests with numbers
    that are no sum ("send 500 rupees to ravi"), phone settings ("turn on wifi"), curiosity and
    how-to questions (QUESTIONS).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

REJECT = "_none"
LABELS = ("home", "calc", "marathi", "fortunes", None)
SPLITS = ("train", "dev", "test")

# -------------------------------------------------------------------------------------------------
# slot words ({name} in a frame). Shared by every split: the frames decide the phrasing.
# -------------------------------------------------------------------------------------------------
FILL = {
    "topic": ["love", "life", "work", "money", "politics", "marriage", "computers", "friends", "time", "food",
              "cricket", "the elections", "black holes", "the stock market", "climate change", "space travel",
              "bollywood", "the budget", "electric cars", "football", "health", "startups", "exams"],
    "song": ["despacito", "bohemian rhapsody", "lata mangeshkar", "the beatles", "arijit singh", "coldplay",
             "imagine dragons", "a r rahman"],
    "music": ["some music", "my playlist", "a podcast", "old hindi songs", "despacito", "the beatles",
              "lofi beats", "classical music", "bhajans", "rock music", "something relaxing"],
    "music_mr": ["गाणी", "भजन", "लता मंगेशकरची गाणी", "पॉडकास्ट", "अभंग", "लावणी", "भावगीते"],
    "person": ["ravi", "anita", "john", "maya", "dad", "my boss", "the doctor", "priya", "sameer", "grandpa",
               "my wife", "my brother", "the plumber", "aunty", "kiran"],
    "person_mr": ["रवी", "अनिता", "माया", "बाबा", "ताई", "आई", "डॉक्टर", "समीर", "आजोबा", "दादा", "किरण",
                  "मावशी"],
    "country": ["france", "japan", "india", "brazil", "kenya", "canada", "egypt", "germany", "nepal", "peru"],
    "country_mr": ["फ्रान्स", "जपान", "भारत", "ब्राझील", "कॅनडा", "जर्मनी", "नेपाळ", "चीन"],
    "city": ["pune", "mumbai", "london", "delhi", "nagpur", "paris", "tokyo", "nashik", "goa", "new york"],
    "city_mr": ["पुणे", "मुंबई", "नागपूर", "नाशिक", "कोल्हापूर", "औरंगाबाद", "दिल्ली", "गोवा"],
    "sport": ["cricket", "football", "hockey", "tennis", "kabaddi", "badminton"],
    "phrase": ["good night", "thank you", "where is the station", "i am hungry", "see you soon"],
    "lang": ["french", "hindi", "german", "japanese", "tamil", "russian"],
    "place": ["the airport", "the station", "the nearest hospital", "a pharmacy", "the mall", "an atm",
              "the bus stop", "a good restaurant", "the post office", "the beach"],
    "place_mr": ["स्टेशन", "विमानतळ", "दवाखाना", "बँक", "बाजार", "एटीएम", "बस स्टॉप", "मंदिर", "शाळा"],
    "food": ["milk", "bread", "a pizza", "eggs", "biryani", "coffee beans", "vada pav", "noodles", "groceries"],
    "food_mr": ["दूध", "भाजी", "पिझ्झा", "अंडी", "पोहे", "वडापाव", "बिर्याणी", "किराणा"],
    "dish": ["pav bhaji", "dal tadka", "pancakes", "paneer butter masala", "upma", "chocolate cake", "pasta"],
    "dish_mr": ["पुरणपोळी", "मिसळ", "साबुदाणा खिचडी", "पिठलं भाकरी", "मोदक", "थालीपीठ"],
    "task": ["pay the bill", "buy milk", "water the plants", "call the bank", "take my medicine", "pick up the kids"],
    "thing": ["the taj mahal", "my tax return", "a red car", "the eiffel tower", "the iphone", "the internet"],
    "thing_mr": ["श्यामची आई", "गीतांजली", "ययाति", "शनिवारवाडा", "गेटवे ऑफ इंडिया"],
    "topic_mr": ["क्रिकेट", "निवडणूक", "शेअर बाजार", "हवामान बदल", "अंतराळ", "राजकारण", "शिक्षण"],
    "word": ["serendipity", "entropy", "democracy", "algorithm", "nostalgia", "photosynthesis"],
    "word_mr": ["लोकशाही", "प्रकाशसंश्लेषण", "अर्थसंकल्प", "संगणक", "गुरुत्वाकर्षण"],
    "app": ["youtube", "whatsapp", "the camera", "maps", "gmail", "instagram", "netflix", "spotify"],
    "famous": ["einstein", "gandhi", "sachin tendulkar", "shah rukh khan", "newton", "marie curie", "elon musk"],
    "famous_mr": ["शिवाजी महाराज", "लोकमान्य टिळक", "सचिन तेंडुलकर", "पु. ल. देशपांडे", "बाबासाहेब आंबेडकर"],
    "invention": ["the telephone", "the light bulb", "the airplane", "the computer", "penicillin", "the radio"],
    "when": ["today", "tomorrow", "this weekend", "tonight", "on monday", "next week", "this evening"],
    "when_mr": ["आज", "उद्या", "या आठवड्यात", "आज रात्री", "सोमवारी", "परवा"],
    "item": ["a laptop", "running shoes", "a gift for my mom", "a new phone", "headphones", "a saree", "books"],
    "item_mr": ["नवा फोन", "बूट", "साडी", "पुस्तके", "हेडफोन", "भेटवस्तू"],
    "unit": ["miles to km", "kg to pounds", "dollars to rupees", "celsius to fahrenheit", "feet to meters"],
    "company": ["tata motors", "infosys", "apple", "reliance", "google"],
    "place_noun": ["atm", "hospital", "pharmacy", "cafe", "bank", "bus depot", "gas station", "park", "gym", "temple",
                   "chemist", "school", "dentist"],
}

# the test split's slot words, each key drawn for every test line (this order fixes the test set)
TEST_FILL = {"topic": FILL["topic"][:16], "song": FILL["song"][:4],
             "music": ["some music", "my playlist", "a podcast", "jazz", "old hindi songs", "despacito", "the beatles"],
             "music_mr": FILL["music_mr"][:4], "person": FILL["person"][:8], "person_mr": FILL["person_mr"][:7],
             "country": FILL["country"][:7], "country_mr": FILL["country_mr"][:5], "city": FILL["city"][:7],
             "sport": FILL["sport"][:4], "phrase": FILL["phrase"][:4],
             "lang": ["french", "spanish", "hindi", "german", "japanese"], "place": FILL["place"][:6],
             "place_mr": ["स्टेशन", "विमानतळ", "दवाखाना", "बँक", "बाजार", "पेट्रोल पंप"], "food": FILL["food"][:6],
             "food_mr": FILL["food_mr"][:5], "task": FILL["task"][:4],
             "thing": ["hamlet", "the taj mahal", "my tax return", "a red car", "the meeting"],
             "thing_mr": FILL["thing_mr"][:3], "topic_mr": FILL["topic_mr"][:5], "word": FILL["word"][:4],
             "app": FILL["app"][:5]}

# -------------------------------------------------------------------------------------------------
# requests no child serves (null). Each split has its own frames.
# -------------------------------------------------------------------------------------------------
NONE_FRAMES = {
    "train": [
        # weather
        "what's the weather in {city}", "will it rain in {city} {when}", "weather forecast for {when}",
        "how's the weather {when}", "do i need an umbrella {when}", "is it cold in {city}", "how humid is it in {city}",
        "will it snow {when}", "weather {city}", "what's the forecast for {city}",
        # alarms, timers, reminders
        "set an alarm for {n} am", "set a timer for {n} minutes", "alarm at {n} pm", "cancel my {n} o'clock alarm",
        "snooze the alarm", "remind me to {task} at {n}", "remind me {when} to {task}", "timer {n} minutes",
        # calls, messages, mail
        "call {person}", "send a message to {person}", "email {person} about {topic}", "phone {person}",
        "dial {person}", "video call {person}", "whatsapp {person}", "reply to {person}", "read my messages",
        "any new emails", "send {person} a voice note",
        # music, video, apps
        "play {music}", "play {song}", "play {song} on spotify", "open {app}", "click a photo", "click a selfie",
        "show me my photos", "record a video", "open the camera app", "watch {topic} videos on youtube",
        # news, sports, markets
        "who won the {sport} match", "read me the news about {topic}", "latest news", "what's the score in the {sport} game",
        "share price of {company}", "how is the sensex doing", "any news about {famous}",
        # knowledge
        "who is the president of {country}", "what is the capital of {country}", "tell me about {topic}",
        "search the web for {topic}", "define {word}", "explain {topic}", "show me pictures of {thing}",
        "who invented {invention}", "when was {famous} born", "how old is {famous}", "where is {thing}",
        "what does {word} mean", "spell {word}", "how many people live in {country}", "who is {famous}",
        "what language do they speak in {country}", "why is the sky blue", "how does {invention} function",
        "tell me the time", "tell me the date", "tell me the score of the {sport} match",
        "tell me the capital of {country}", "tell me the population of {country}", "tell me the news",
        "translate {phrase} into {lang}", "what is {word}",
        # shopping, food, travel, transport
        "note {food} in my shopping list", "order {food}", "buy {item}", "where can i buy {item}",
        "track my order", "book a table at {place}", "book a cab to {place}", "book a flight to {city}",
        "train tickets to {city}", "search hotels in {city}", "how do i reach {place}", "drive me to {place}",
        "route to {place}", "traffic to {place}", "recipe for {dish}", "how do i cook {dish}",
        "convert {n} {unit}", "cheap flights to {city}", "price of {item}",
        # calendar, time
        "what time is it in {city}", "what's on my calendar {when}", "book a meeting {when}",
        "when is my next appointment", "how many days until diwali", "what's the date {when}",
        # small talk and the assistant itself
        "how are you", "what's your name", "good morning", "good night", "who made you", "are you a robot",
        "what can you do", "i'm bored", "do you like {topic}", "hi friend", "thank you a lot",
        "i love you", "bye", "are you listening", "talk to me",
        # devices and the house, but no command for it
        "buy a new {device}", "what does a {device} cost", "my {device} is broken", "who can repair the {device}",
        "best {device} to buy", "how do i clean a {device}",
        # Marathi
        "{city_mr}मध्ये आज हवामान कसे आहे", "उद्या {city_mr}मध्ये पाऊस पडेल का", "सकाळी {n} चा अलार्म लाव",
        "{n} मिनिटांचा टायमर लाव", "{music_mr} लाव", "{person_mr}ला फोन कर", "{person_mr}ला मेसेज पाठव",
        "किती वाजले", "आज कोणती तारीख आहे", "{topic_mr}बद्दल बातम्या वाच", "{place_mr}ला कसे जायचे",
        "यादीत {food_mr} लिही", "{country_mr}ची राजधानी कोणती", "{place_mr}साठी कॅब बुक कर",
        "{food_mr} ऑर्डर कर", "फोटो घे", "तू कसा आहेस", "तुझे नाव काय", "{topic_mr} म्हणजे काय",
        "{app} उघड", "{when_mr} पाऊस आहे का", "{when_mr} किती गरम होईल", "छत्री घेऊन जाऊ का", "{city_mr}चे हवामान सांग",
        "{n} चा गजर लाव", "गजर बंद कर", "{person_mr}ला फोन लाव", "{person_mr}ला व्हॉट्सअॅप कर", "माझे मेसेज वाच",
        "{famous_mr} कोण आहेत", "{famous_mr} यांचे जन्मस्थान कोणते", "{thing_mr} कुठे आहे", "{word_mr} म्हणजे काय",
        "{country_mr}ची लोकसंख्या किती आहे", "आकाश निळे का असते", "{dish_mr} कसा बनवायचा", "{dish_mr}ची कृती सांग",
        "{item_mr} खरेदी कर", "{item_mr}ची किंमत काय आहे", "{city_mr}ला जाणारी बस कधी आहे",
        "{city_mr}चे तिकीट बुक कर", "जवळचे हॉटेल शोध", "डॉक्टरची अपॉइंटमेंट घे", "क्रिकेटचा स्कोअर काय झाला",
        "आजच्या ठळक बातम्या", "शुभ सकाळ", "शुभ रात्री", "धन्यवाद", "मला कंटाळा आला आहे", "तुला कोणी बनवले",
        "तू काय करू शकतोस", "{when_mr} माझ्या कॅलेंडरवर काय आहे", "{person_mr}चा वाढदिवस कधी आहे",
        "{person_mr}ला ईमेल पाठव", "डोकेदुखीवर उपाय सांग", "{topic_mr}वरचे व्हिडिओ दाखव", "सेल्फी घे",
        "नवा {device_mr} घ्यायचा आहे", "{device_mr} दुरुस्त करणारा कोण आहे",
        # mixed
        "{person} ला call कर", "alarm लाव {n} वाजता", "weather कसं आहे {when_mr}", "news सांग", "{song} play कर",
        "{person_mr}ला message पाठव", "uber बुक कर", "{food} order कर", "{app} open कर", "cricket score काय आहे",
        "{city} चं weather सांग", "reminder लाव {task}", "timer लाव {n} minutes", "selfie घे", "google वर {topic} search कर",
        # more English requests: other syntax, numbers that are no sum, devices that are no home's
        "what's the temperature in {city}", "how hot is it in {city} {when}", "temperature outside", "is it raining",
        "will i need a jacket {when}", "air quality in {city}", "sunrise time {when}", "when does the sun set",
        "set my alarm for {n} o'clock", "alarm for {n} thirty", "remind me in {n} hours", "call me in {n} minutes",
        "remind me about {task}", "a reminder for {when}", "delete all alarms", "how long is left on the timer",
        "send an sms to {person}", "tell {person} i will be home soon", "let {person} know i am on my way",
        "message {person} on whatsapp", "any missed calls", "who called me", "call back {person}", "redial",
        "send {n} rupees to {person}", "pay {person} {n} rupees", "book {n} tickets for the movie",
        "order {n} {food}", "a table for {n} at {place}", "{n} tickets to {city}", "what's my bank balance",
        "pay the electricity bill", "recharge my phone", "data left on my phone",
        "turn on wifi", "switch off bluetooth", "turn on airplane mode", "switch on do not disturb",
        "turn off notifications", "mute my phone", "increase the phone volume", "lower the ringtone",
        "open {app} please", "close {app}", "uninstall {app}", "update my apps", "screenshot please",
        "play the next song", "skip this song", "pause the music", "resume my podcast", "shuffle {music}",
        "who sang {song}", "play something by {song}", "any new movies this week", "what's on tv tonight",
        "latest {sport} scores", "when is the next {sport} match", "who is winning the match", "ipl points table",
        "news about {country}", "what happened in {country} {when}", "give me the latest on {topic}",
        "who was {famous}", "when did {famous} die", "how tall is {famous}", "what is {famous} known for",
        "how big is {country}", "how deep is the ocean", "how hot is the sun", "how many continents are there",
        "distance from {city} to {city}", "how long to drive to {city}", "is my train on time", "flight status",
        "what is {phrase} in {lang}", "{phrase} in {lang}", "translate this to {lang}", "meaning of {word}",
        "synonym for {word}", "how do you spell {word}", "is there a {place_noun} near me", "closest {place_noun}",
        "nearby {place_noun}", "opening hours of {place}", "is {place} open on sunday", "where do i park",
        "i'm hungry", "i am tired", "i feel sad", "you are funny", "you're smart", "what's up", "sing a song",
        "dance for me", "are you married", "where do you live", "what's your favourite colour", "do you dream",
        "can we talk", "let's chat", "what do you think about {topic}", "do you know me", "what's my name",
        "help", "be quiet", "never mind", "cancel that", "repeat that", "louder please", "what did you just do",
        "how do i reset my password", "my internet is slow", "restart my phone", "is the server down",
        "{person} ला {n} रुपये पाठव", "{app} बंद कर", "wifi चालू कर", "bluetooth बंद कर", "phone silent कर",
        "{n} तिकिटे बुक कर", "{city_mr}ला किती वेळ लागेल", "{city_mr}चे तापमान किती आहे", "पाऊस पडतोय का",
        "{person_mr}ला सांग मी येतोय", "कोणाचे फोन आले", "पुढचे गाणे लाव", "गाणे थांबव", "आवाज वाढव",
        "{famous_mr} कधी जन्मले", "{country_mr}चे चलन कोणते", "{lang} मध्ये {phrase} कसे म्हणतात",
        "माझे बँक खाते किती आहे", "वीज बिल भर", "फोन रिचार्ज कर", "{place_mr} कधी उघडते", "जवळ {place_mr} आहे का",
        # requests in more shapes: a subject first, a person's name and a clause, a bare noun phrase
        "{person} awaits a call from me", "message for {person}: stuck in traffic", "let {person} know dinner is ready",
        "remind {person} about {task}", "inform {person} that the bus left", "sms {person} good night",
        "my alarm for {n} please", "an alarm {n} tomorrow", "rouse me at {n}", "up at {n} am tomorrow, alarm please",
        "i have to be up by {n}", "{n} minutes on the clock please", "a {n} second timer", "tea timer {n} minutes",
        "will the sky be clear {when}", "is it hot outside", "rain or shine {when}", "any storms {when}",
        "what's the top story", "top stories {when}", "breaking news on {topic}", "anything new in {topic}",
        "who authored {thing}", "author of {thing}", "who painted the mona lisa", "who composed {song}",
        "how many kilometres to {city}", "how long a flight to {city}", "how many days in a leap year",
        "throw on {music}", "stick on {music}", "queue up {music}", "{music} on spotify", "some {music} please",
        "fetch me a cab", "a cab to {place}", "route me to {place}", "the way home", "map of {city}",
        "pay my phone bill", "balance in my account", "transfer {n} rupees to {person}", "split the bill with {person}",
        "what's for dinner", "a good movie {when}", "showtimes {when}", "tickets for the match {when}",
        "{person_mr}ला निरोप दे", "{person_mr}ला मी उशिरा येईन असे कळव", "पहाटे {n} ला जागे कर", "{n} वाजता मला हाक मार",
        "आभाळ स्वच्छ राहील का", "{city_mr}ला किती अंतर आहे", "{music_mr} वाजवून दाखव", "आजचे मुख्य समाचार",
    ],
    "dev": [
        "forecast for {city} {when}", "is it windy in {city}", "wake-up alarm for {n}", "{n} minute timer please",
        "give {person} a call", "drop {person} a message", "queue {song}", "any updates about {topic}",
        "who discovered {invention}", "what is the population of {country}", "who founded {company}",
        "order {food} for dinner", "shop for {item}", "fastest way to {place}", "book tickets to {city}",
        "what year is it", "tell me a fact about {country}", "nice to meet you", "are you awake",
        "i need a new {device}", "where did i park my car", "how long is a marathon",
        "{city_mr}मध्ये ऊन आहे का", "{n} वाजताचा गजर लाव", "{person_mr}शी बोलायचे आहे", "{music_mr} सुरू कर",
        "{famous_mr} कुठे जन्मले", "{dish_mr} बनवण्याची पद्धत", "{item_mr} विकत घे", "आज सुट्टी आहे का",
        "{city} ला ticket बुक कर", "{person} ला video call कर", "{topic_mr}ची माहिती हवी आहे",
        "chance of rain {when}", "how cold will it be {when}", "alarm {n} sharp", "ping {person}",
        "leave a voicemail for {person}", "shuffle my liked songs", "which station is this song from",
        "who directed titanic",
        "how old is the universe", "how many legs does a spider have", "capital city of {country}",
        "send flowers to {person}", "order a cake for {when}", "cheapest phone under ten thousand",
        "the quickest route to {place}", "is the metro on time", "book me a haircut",
        "when is my dentist appointment", "you are awesome", "tell me about yourself", "what are you",
        "turn on location", "silence my phone", "show me my steps today", "how did {sport} begin",
        "{city_mr}मध्ये धुके आहे का", "{person_mr}ला व्हिडिओ फोन कर", "{song} ऐकायचे आहे", "जवळचे {place_mr} दाखव",
        "{country_mr}ची भाषा कोणती", "आज कुठला सण आहे", "{item_mr} ऑनलाईन बघ", "{person} ला msg कर",
    ],
    "test": [   # (this order and the slot words of TEST_FILL fix the test set: keep both)
        "is it going to be sunny", "wake me up at {n}", "start a {n} minute countdown", "put on some jazz",
        "ring {person}", "text {person} that i am late", "tell me the headlines", "what day is it",
        "how do you say thank you in spanish", "navigate to the nearest petrol pump", "who wrote hamlet",
        "how far is the moon", "buy bread online", "schedule a meeting at {n}", "what's trending now",
        "बाहेर थंडी आहे का", "मला {n} वाजता उठव", "जुनी गाणी ऐकव", "{person_mr}ला कॉल लाव", "आजचा वार कोणता",
        "ताज्या बातम्या सांग", "जवळचा पेट्रोल पंप कुठे आहे", "हॅम्लेट कोणी लिहिले", "ऑनलाइन भाजी मागव",
        "is it going to be sunny in {city}", "wake me up at {n}", "start a {n} minute countdown",
        "put on {music}", "ring {person}", "text {person} that i am late", "tell me the headlines on {topic}",
        "what day is it", "how do you say {phrase} in {lang}", "navigate to {place}", "who wrote {thing}",
        "how far is {city} from here", "buy {food} online", "schedule a meeting with {person} at {n}",
        "what's trending about {topic}", "give me directions to {place}", "launch {app}",
        "बाहेर {city}मध्ये थंडी आहे का", "मला {n} वाजता उठव", "{music_mr} वाजव", "{person_mr}ला कॉल लाव",
        "आजचा वार कोणता", "{topic_mr}च्या ताज्या बातम्या सांग", "जवळचा {place_mr} कुठे आहे",
        "{thing_mr} कोणी लिहिले", "ऑनलाइन {food_mr} मागव", "{person_mr}सोबत मीटिंग ठरव",
    ],
}
FILL["device"] = ["fan", "tv", "fridge", "ac", "washing machine", "microwave", "air purifier", "geyser", "mixer"]
FILL["device_mr"] = ["फ्रिज", "पंखा", "टीव्ही", "मिक्सर", "गिझर", "वॉशिंग मशीन"]

# composed requests no child serves: (verb, object) and (question, subject). Train only.
NONE_VERBS = ["play", "call", "email", "search for", "locate", "show me", "book", "order", "buy", "look up",
              "define", "spell", "read", "send", "share", "download", "install", "track", "record", "stream",
              "watch", "google", "pay", "cancel", "message", "video call", "rate", "review", "compare", "follow",
              "subscribe to", "print", "forward", "save", "bookmark", "like", "upload"]
NONE_NOUNS = ["a taxi", "my flight", "the train to pune", "a doctor's appointment", "movie tickets", "a new phone",
              "my email", "the weather", "the news", "a recipe for dal", "cheap hotels", "my package", "the score",
              "a song", "a podcast", "my calendar", "the traffic", "my bank balance", "a birthday gift",
              "the nearest cafe", "my notes", "the word namaste", "a video", "the match", "my photos", "an uber",
              "a plumber", "the electricity bill", "the meaning of life", "wikipedia", "my friend", "this article",
              "the latest episode", "that restaurant", "my last order", "the weekend sale", "a yoga class"]
NONE_QUESTIONS = ["who is", "what is", "where is", "when is", "why is", "who invented", "what does",
                  "where can i locate", "is there", "do you know", "can you explain", "what's the best",
                  "how big is", "how old is", "what happened to", "tell me about"]
NONE_Q_NOUNS = ["the tallest building", "einstein", "the next holiday", "a good restaurant", "the sky blue",
                "a black hole", "the best phone", "the meaning of karma", "the speed of light", "the world cup",
                "shah rukh khan", "the election result", "the price of gold", "the nearest metro", "the sahara",
                "the amazon river", "jupiter", "the olympics", "the roman empire", "bitcoin", "the ipl final"]
NONE_MR = ["{x} शोध", "{x} दाखव", "{x} बुक कर", "{x} ऑर्डर कर", "{x} पाठव", "{x} कोण आहे", "{x} कुठे आहे",
           "{x} कधी आहे", "{x} बद्दल माहिती दे", "{x} डाउनलोड कर", "{x} बद्दल सांग", "{x} कसे आहे",
           "{x} चा भाव काय", "{x} शेअर कर", "{x} रद्द कर"]
NONE_MR_NOUNS = ["रिक्षा", "विमानाचे तिकीट", "डॉक्टरची वेळ", "सिनेमाची तिकिटे", "नवा फोन", "माझा ईमेल",
                 "आजच्या बातम्या", "वरणाची रेसिपी", "स्वस्त हॉटेल", "माझे पार्सल", "क्रिकेटचा स्कोअर", "गाणे",
                 "माझे कॅलेंडर", "रहदारी", "बँकेतील शिल्लक", "वाढदिवसाची भेट", "जवळचे कॅफे", "व्हिडिओ",
                 "सोन्याचा भाव", "सचिन तेंडुलकर", "पुढची सुट्टी", "चंद्र", "शिवाजी महाराज", "लोकल ट्रेन",
                 "पेट्रोलचा दर", "दिवाळीची सुट्टी", "आयपीएलचा सामना", "नवीन सिनेमा", "माझी ऑर्डर"]

# -------------------------------------------------------------------------------------------------
# requests for the text children. Each split has its own.
# -------------------------------------------------------------------------------------------------
REQUESTS = {
    "train": {
        "fortunes": ["tell me my fortune", "tell me a fortune", "give me a fortune cookie", "what does fate have for me",
                     "something wise please", "give me a quote", "a funny quote please", "tell me a joke",
                     "fortune", "quote of the day", "a smart remark about {topic}", "a quote about {topic}",
                     "an epigram about {topic}", "something clever about {topic}", "what is my fortune today",
                     "read my fortune", "open a fortune cookie", "my fortune please", "inspire me",
                     "a motivational quote", "something funny please", "give me a one-liner", "an aphorism about {topic}",
                     "tell me something profound", "a fortune for {person}", "what will happen to me {when}",
                     "will i be rich one day", "a famous quote about {topic}", "make me laugh", "a joke about {topic}",
                     "fortune cookie please", "what's my fortune", "once upon a time", "write me a fortune",
                     # more ways to ask for a fortune, a quip or a thought
                     "give me some advice", "any advice for me {when}", "a word of advice", "words to live by",
                     "a thought for the day", "thought of the day", "a bit of philosophy", "something philosophical",
                     "a clever line", "a zinger", "a maxim", "an adage", "a motto for {when}", "my lucky message",
                     "how lucky am i {when}", "am i lucky {when}", "what's in my destiny", "what does destiny hold",
                     "tell me my destiny", "read my palm", "my horoscope for {when}", "what does my horoscope show",
                     "consult the oracle", "ask the oracle about me", "shake the magic eight ball",
                     "crystal ball, what do you see", "pick a tarot card for me", "a random fortune", "another fortune",
                     "one more fortune", "surprise me", "something to think about", "a deep thought", "a funny line",
                     "tell me a pun", "a limerick please", "quote me something", "a quote from {famous}",
                     "a line from {famous}", "run fortune", "a short fortune", "a long fortune", "fortune -s",
                     "i need some inspiration", "motivate me", "something uplifting", "brighten my day", "make my day",
                     "what's my luck {when}", "will i meet my love", "will i be famous", "what lies ahead for me",
                     "what awaits me {when}", "is luck on my side", "give me a lucky thought", "a good omen please",
                     "humor me", "a one-liner about {topic}", "a wisecrack", "something smart please", "an old adage",
                     "famous last words", "a bumper sticker line", "a line of graffiti", "an insult, shakespeare style",
                     "a haiku", "a silly fact", "something absurd", "a murphy's law", "a law of life",
                     "my fortune for {when}", "fortune for {person}", "a fortune about {topic}", "what's my lucky number",
                     # fortunes asked for in still other words
                     "what will tomorrow bring", "tell me what {when} brings", "what's coming my way",
                     "what's in the cards for me", "what do the cards show", "reveal my fate", "my fate {when}",
                     "tell my fate", "spin the wheel of fortune", "read my tea leaves", "what does the universe hold for me",
                     "what is written for me", "foretell my luck", "what luck will i have", "something wise",
                     "wise words please", "enlighten me", "a nugget of truth", "a life lesson", "some food for thought",
                     "something to ponder", "give me a riddle", "a random thought", "a thought about {topic}",
                     "something clever", "a quip about {topic}", "a mantra for {when}", "a koan", "a fortune, please",
                     "any fortunes {when}", "one fortune", "give me your best line", "a catchy slogan",
                     "a line to make me smile", "some words of encouragement", "lift my spirits", "a little humour",
                     "what do you foresee for me", "what's my fate", "tell me my luck", "how will my week go",
                     "will i be happy", "what about my love life", "will my wish come true", "bless me with a fortune",
                     "a cookie fortune", "dispense a fortune", "fortune of the day", "a fortune for the morning"],
        "marathi": ["मराठीत एक गोष्ट सांग", "मराठीत लिहा", "एक कविता लिही", "पुढे लिहा:", "या वाक्याचे पुढे लिहा",
                    "नमस्कार, तुम्ही कसे आहात?", "फाइल उघडा", "सेटिंग्ज बदला", "कृपया पुन्हा प्रयत्न करा",
                    "{topic_mr}वर एक कविता लिहा", "{topic_mr}बद्दल छोटी गोष्ट लिही", "एक परिच्छेद लिहा",
                    "हे वाक्य पुढे लिही", "पुढील ओळी लिहा", "मराठी भाषेत लिहा", "एक गोष्ट लिहा",
                    "write a marathi poem", "write something in marathi", "a story in marathi", "continue in marathi",
                    "marathi मध्ये poem लिही", "मराठीत काहीतरी लिही", "marathi writing please", "एक लेख लिहा",
                    "{topic_mr} या विषयावर लिहा", "गोष्ट सांग", "मराठी कविता",
                    "एक लघुकथा लिहा", "एक बालकथा सांग", "मराठी गोष्ट", "मराठीत लेख लिहा", "पुढची ओळ लिही",
                    "मराठीत बोल", "मराठीत काहीतरी सांग", "मराठीत एक उतारा लिहा", "{topic_mr}वर माहिती लिहा",
                    "continue this marathi passage", "write in marathi about {topic}", "marathi story please",
                    "मराठी मध्ये लिहा", "पुढे चालू ठेव", "ही गोष्ट पुढे सांग", "या ओळी पुढे लिही", "एक प्रसंग लिहा",
                    "{topic_mr} बद्दल मराठीत लिही", "मराठीत वर्णन कर", "एक पत्र लिहा", "मराठीत संवाद लिहा",
                    "marathi कविता लिही", "मराठी paragraph पुढे लिही", "आठवणी लिहा", "एक सुविचार मराठीत"],
    },
    "dev": {
        "fortunes": ["any fortune for me", "a line of insight on {topic}", "give me today's thought",
                     "what's in store for me", "a clever remark please", "hit me with a quip", "fortune time",
                     "a pearl of insight", "what does fate hold {when}", "amuse me with a quote", "a gem of a quote"],
        "marathi": ["मराठीत चार ओळी लिहा", "{topic_mr}वर लेख लिही", "marathi मध्ये गोष्ट", "हा लेख पुढे न्या",
                    "मराठीत एक किस्सा सांग", "{topic_mr}वर दोन ओळी", "marathi मध्ये काहीतरी लिही", "मराठी लेखन कर"],
    },
    "test": {
        "fortunes": ["predict my future", "got any wisdom for me", "cheer me up with a saying", "a proverb about {topic}",
                     "share a witty line on {topic}", "what do the stars say about me"],
        "marathi": ["मराठी मजकूर पुढे चालू ठेवा", "एक छोटा निबंध लिहा", "यापुढील वाक्य पूर्ण करा", "मराठीत उत्तर द्या"],
    },
}

# -------------------------------------------------------------------------------------------------
# re-phrasing the agent generators' training lines (train and dev only)
# -------------------------------------------------------------------------------------------------
# English verbs per home intent; {X} the device name or "the <domain words> in the <area>"
HOME_EN = {
    "HassTurnOn": ["turn on {X}", "switch on {X}", "power up {X}", "{X} on", "put on {X}", "bring on {X}",
                   "{X} on please", "boot up {X}", "{X} should be on", "have {X} on", "on with {X}"],
    "HassTurnOff": ["turn off {X}", "switch off {X}", "power down {X}", "{X} off", "shut off {X}", "put out {X}",
                    "{X} off please", "{X} should be off", "have {X} off", "off with {X}", "turn {X} off"],
    "HassToggle": ["toggle {X}", "flip {X}", "{X} toggle", "toggle {X} please"],
    "HassLightSet": ["set {X} to {V}", "dim {X} to {V}", "{X} at {V}", "brightness {V} for {X}", "{X} to {V}",
                     "lower {X} to {V}", "raise {X} to {V}"],
    "HassClimateSetTemperature": ["set {X} to {V}", "{X} to {V}", "put {X} on {V}", "{X} at {V}",
                                  "cool {X} to {V}", "heat {X} to {V}", "temperature {V} on {X}"],
    "HassSetPosition": ["set {X} to {V}", "open {X} to {V}", "{X} to {V}", "move {X} to {V}"],
    "HassOpenCover": ["open {X}", "raise {X}", "open up {X}", "{X} open", "{X} up"],
    "HassCloseCover": ["close {X}", "lower {X}", "shut {X}", "{X} close", "{X} down"],
    "HassLockLock": ["lock {X}", "lock up {X}", "{X} lock", "lock {X} please"],
    "HassLockUnlock": ["unlock {X}", "{X} unlock", "unlock {X} please"],
    "HassGetState": ["is {X} on", "is {X} off", "status of {X}", "what is {X} at", "how is {X}", "{X}?",
                     "is {X} open", "is {X} locked", "what's {X} doing"],
}
HOME_MR = {
    "HassTurnOn": ["{X} चालू कर", "{X} सुरू कर", "{X} लाव", "{X} चालू करा", "{X} on कर", "{X} चालू"],
    "HassTurnOff": ["{X} बंद कर", "{X} बंद करा", "{X} बंद", "{X} off कर", "{X} घालव"],
    "HassToggle": ["{X} उलट कर", "{X} toggle कर"],
    "HassLightSet": ["{X} {V} कर", "{X} {V} वर ठेव", "{X} {V}"],
    "HassClimateSetTemperature": ["{X} {V} वर ठेव", "{X} {V} कर", "{X} {V}"],
    "HassSetPosition": ["{X} {V} उघड", "{X} {V} वर ठेव"],
    "HassOpenCover": ["{X} उघड", "{X} उघडा", "{X} वर कर", "{X} open कर"],
    "HassCloseCover": ["{X} बंद कर", "{X} खाली कर", "{X} close कर"],
    "HassLockLock": ["{X} लॉक कर", "{X}ला कुलूप लाव", "{X} lock कर"],
    "HassLockUnlock": ["{X} अनलॉक कर", "{X} unlock कर"],
    "HassGetState": ["{X} चालू आहे का", "{X} बंद आहे का", "{X} किती आहे", "{X} काय आहे", "{X} कसा आहे"],
}
# more frames per intent (train): other openers, word orders, the state asked in other words
HOME_EN_MORE = {
    "HassTurnOn": ["i'd like {X} on", "can you turn on {X}", "can {X} be on", "let's turn on {X}", "{X} on, thanks",
                   "turn on {X} for a bit", "please switch on {X}", "go ahead and turn on {X}", "i need {X} on",
                   "{X} should be switched on", "{X}: on", "on: {X}", "turn {X} on again", "switch {X} back on",
                   "power {X} on", "{X} power up", "bring {X} on now"],
    "HassTurnOff": ["i'd like {X} off", "can you turn off {X}", "let's turn off {X}", "no {X} please", "{X} off now",
                    "turn {X} off for now", "please switch off {X}", "go ahead and turn off {X}", "i need {X} off",
                    "{X} should be switched off", "{X}: off", "off: {X}", "switch {X} back off", "power {X} off",
                    "{X} power down", "enough {X}, off", "nobody uses {X}, turn off", "{X} can go off"],
    "HassToggle": ["can you toggle {X}", "flip {X} over", "toggle {X} again", "{X}: toggle"],
    "HassLightSet": ["brightness of {X} {V}", "can you dim {X} to {V}", "{X} brightness at {V}", "set {X} at {V}",
                     "{V} brightness for {X}", "bring {X} down to {V}", "turn {X} up to {V}", "turn {X} down to {V}",
                     "i'd like {X} at {V}", "{X} dimmed to {V}"],
    "HassClimateSetTemperature": ["{X} temp {V}", "set {X} at {V}", "i'd like {X} at {V}", "can you set {X} to {V}",
                                  "warm {X} to {V}", "{X} should be {V}", "keep {X} on {V}", "{X} temperature at {V}"],
    "HassSetPosition": ["can you set {X} to {V}", "{X} position {V}", "bring {X} to {V}", "{X} at {V} please"],
    "HassOpenCover": ["can you open {X}", "let's open {X}", "open {X} up", "{X} open please", "roll up {X}",
                      "{X} all the way up"],
    "HassCloseCover": ["can you close {X}", "let's close {X}", "roll down {X}", "{X} all the way down",
                       "shut {X} please"],
    "HassLockLock": ["can you lock {X}", "lock up {X} for the night", "{X} locked please", "keep {X} locked"],
    "HassLockUnlock": ["can you unlock {X}", "unlock {X} for me please", "{X} unlocked please",
                       "let me in, unlock {X}"],
    "HassGetState": ["is {X} still on", "did i leave {X} on", "did someone turn off {X}", "what's the reading on {X}",
                     "tell me if {X} is on", "how's {X}", "what is {X} showing", "is {X} shut or open", "{X} on?",
                     "{X} off?", "has {X} been turned off"],
}
HOME_MR_MORE = {
    "HassTurnOn": ["{X} चालू कर ना", "{X} सुरू ठेव", "जरा {X} लाव", "{X} चालू कर बरं", "{X} लावून ठेव",
                   "{X} on करा ना"],
    "HassTurnOff": ["{X} बंद कर ना", "{X} बंद ठेव", "जरा {X} बंद कर", "{X} बंद कर बरं", "{X} off करा ना",
                    "{X} नको, बंद कर"],
    "HassLightSet": ["{X} {V} ठेव", "{X}ची brightness {V} कर", "{X} {V} वर आण"],
    "HassClimateSetTemperature": ["{X} {V} ठेव", "{X}चे temperature {V} कर", "{X} {V} वर आण"],
    "HassOpenCover": ["{X} उघड ना", "जरा {X} उघड", "{X} वर ओढ"],
    "HassCloseCover": ["{X} बंद कर ना", "जरा {X} खाली कर", "{X} खाली ओढ"],
    "HassGetState": ["{X} चालू आहे ना", "{X} बंद केला का", "{X}चे काय झाले", "{X} on आहे का", "{X} किती वर आहे"],
}
for _pool, _more in ((HOME_EN, HOME_EN_MORE), (HOME_MR, HOME_MR_MORE)):
    for _intent, _frames in _more.items():
        _pool[_intent] = _pool[_intent] + [f for f in _frames if f not in _pool[_intent]]
# words that can stand where the verb was: the mother must not need the verb to see a home command
HOME_ANYVERB = ["turn", "switch", "power", "put", "set", "flip", "toggle", "lower", "raise", "open", "shut",
                "close", "lock", "unlock", "dim", "brighten", "run", "use", "operate", "control", "handle",
                "hit", "press", "push", "tap", "do", "fix", "boot", "cycle", "reset"]
DOMAIN_EN = {"light": "lights", "switch": "plugs", "fan": "fans", "climate": "ac", "cover": "blinds",
             "lock": "locks", "media_player": "tv", "sensor": "sensors"}
DOMAIN_MR = {"light": "दिवे", "switch": "प्लग", "fan": "पंखे", "climate": "एसी", "cover": "पडदे", "lock": "कुलूप",
             "media_player": "टीव्ही", "sensor": "सेन्सर"}
# calc: frames around an arithmetic question of the calc generator, or a bare expression
CALC_FRAMES = ["{E}", "{E} = ?", "{E} equals", "{E} equals what", "what's {E}", "result of {E}", "answer of {E}",
               "solve {E}", "evaluate {E}", "what comes out of {E}", "{E}, what comes out", "give me {E}",
               "i need {E}", "calculator: {E}", "math: {E}", "quick math {E}", "{E} is what", "calc {E}",
               "{E} किती येतात", "हिशोब: {E}", "{E} सांगा", "{E} बरोबर किती",
               # openers that other requests share: arithmetic is arithmetic whatever it is wrapped in
               "can you do {E}", "help me with {E}", "i wish to know {E}", "what about {E}", "let me know {E}",
               "show me {E}", "and {E}", "now {E}", "next: {E}", "hey {E} ok", "i wonder what {E} is",
               "do you know {E}", "please solve {E} for my homework", "मला {E} हवे आहे", "{E} ते बघ",
               "figure out {E}", "quick question: {E}", "what do i have for {E}", "what comes from {E}",
               "result please: {E}", "{E}?", "{E} -> ?", "the answer to {E}", "{E} makes what", "{E}, right?",
               "can you calculate {E} for me", "my kid asks {E}", "in my head: {E}", "{E} comes out to",
               "sum this: {E}", "math question {E}", "{E} is equal to", "{E} total",
               "{E} किती", "{E} किती येईल", "{E} काय येते", "{E} सांग ना", "{E} किती बरं", "गणित: {E}",
               "{E} बरोबर काय", "जरा {E}"]
CALC_OPS = [("+", "plus", "अधिक"), ("-", "minus", "वजा"), ("*", "times", "गुणिले"), ("/", "divided by", "भागिले"),
            ("x", "into", "गुणा")]
# one-number operations, percentages and lists, in English and Marathi ({a} {b} numbers, {L} a list)
CALC_UNARY = {"en": ["half of {a}", "double {a}", "twice {a}", "{a} squared", "{a} cubed", "a quarter of {a}",
                     "{a} percent of {b}", "{a}% of {b}", "average of {L}", "sum of {L}", "{a} to the power of {b}",
                     "{a} multiplied by {b}", "square of {a}", "cube of {a}", "mean of {L}", "total of {L}"],
              "mr": ["{a} चे अर्धे", "{a} ची दुप्पट", "{a} चा वर्ग", "{a} चा घन", "{a} चा पाव भाग", "{b} चे {a} टक्के",
                     "{L} यांची सरासरी", "{L} यांची बेरीज", "{a} चा {b} वा घात", "{a} चे निम्मे"]}

# the dev split's own phrasings of home commands and sums (in no other split): the threshold is
# chosen on phrasings the mother never saw, as the test's are
DEV_HOME_EN = {
    "HassTurnOn": ["mind turning on {X}", "{X} on if you can", "we need {X} on", "{X} should stay on", "{X} coming on",
                   "on goes {X}", "{X} back on"],
    "HassTurnOff": ["mind turning off {X}", "{X} off if you can", "we need {X} off", "{X} should stay off",
                    "off goes {X}", "{X} to stay off", "leave {X} switched off"],
    "HassToggle": ["toggle {X} if you can", "{X} the other way"],
    "HassLightSet": ["bump {X} to {V}", "dial {X} down to {V}", "{X} at {V} thanks", "crank {X} to {V}"],
    "HassClimateSetTemperature": ["bump {X} to {V}", "{X} at {V} thanks", "dial {X} to {V}"],
    "HassSetPosition": ["{X} at {V} thanks", "bring {X} only to {V}"],
    "HassOpenCover": ["{X} open if you can", "up goes {X}"],
    "HassCloseCover": ["{X} shut if you can", "down goes {X}"],
    "HassLockLock": ["{X} locked if you can", "lock {X} tight"],
    "HassLockUnlock": ["{X} unlocked if you can"],
    "HassGetState": ["is {X} on at the moment", "what's up with {X}", "{X}: on or off", "was {X} left on"],
}
DEV_HOME_MR = {
    "HassTurnOn": ["{X} चालू असू दे", "{X} चालू व्हायला हवा", "{X} जरा चालू कर"],
    "HassTurnOff": ["{X} बंद असू दे", "{X} बंद व्हायला हवा", "{X} जरा बंद कर"],
    "HassLightSet": ["{X} {V} असू दे"], "HassClimateSetTemperature": ["{X} {V} असू दे"],
    "HassOpenCover": ["{X} उघडे असू दे"], "HassCloseCover": ["{X} खाली असू दे"],
    "HassGetState": ["{X} आहे का चालू", "{X} चालू होता का"],
}
DEV_HOME_ANYVERB = ["bump", "dial", "crank", "manage", "sort", "handle"]
DEV_CALC_FRAMES = ["{E} comes to what", "{E} gives", "need the result of {E}", "{E} = what", "mental math: {E}",
                   "homework: {E}", "{E} in total?", "{E} चा हिशोब", "{E} किती भरेल", "{E} बरोबर?"]

# fillers people wrap any request in (train)
WRAP = {"pre": ["", "", "", "hey ", "ok ", "listen, ", "um ", "so ", "can you please ", "i said ", "ऐक, ", "हे ",
                "please ", "jara ", "अहो, ", "okay so ", "hi, ", "sorry, ", "quick one, ", "one thing: ", "well, ",
                "dear assistant, ", "alright, ", "hmm ", "so yeah ", "may i ask, ", "i was wondering, ", "oi ",
                "good morning, ", "buddy, ", "hey there, ", "yes, ", "no wait, ", "ऐका ना, ", "बरं, ", "अगं, ",
                "भाऊ, ", "मित्रा, ", "एक मिनिट, "],
        "post": ["", "", "", " please", " thank you", " right now", " ok", " ना", " बघ", " now",
                 " प्लीज", " ok?", " appreciate it", " cheers", " pls", " when you can", " mate", " dude", " boss",
                 " yaar", " bhau", " re", " हो", " बरं का", " ना रे", " thank u", " if you don't mind", " again",
                 " please, ty", " :)", " ..."]}
DEV_WRAP = {"pre": ["", "", "excuse me, ", "right, ", "हॅलो, "], "post": ["", "", " then", " okay", " हं"]}


def _fill_test(rng: random.Random, t: str) -> str:
    for k, vals in TEST_FILL.items():
        t = t.replace("{" + k + "}", rng.choice(vals))
    return t.replace("{n}", str(rng.randint(1, 12)))


def _fill(rng: random.Random, t: str) -> str:
    for k, vals in FILL.items():
        while "{" + k + "}" in t:
            t = t.replace("{" + k + "}", rng.choice(vals), 1)
    return t.replace("{n}", str(rng.randint(1, 12)))


# open-ended questions and requests no child serves, composed from a frame and slot words (train)
GENERIC = {
    "en": ["who {vpast} {ent}", "what is the {attr} of {ent}", "how do i {vb} {obj}", "can you {vb2} {obj}",
           "i wish to {vb} {obj}", "i need {obj}", "where is my {mine}", "when does {event} begin",
           "is {shop} open {when}", "what happened in {city} {when}", "recommend a {kind}", "suggest a good {kind}",
           "any good {kind} near me", "show me {obj}", "what's the best {kind} in {city}", "should i {vb} {obj}",
           "why is {ent} so {adj}", "how {adj} is {ent}", "tell me something about {ent}", "is {ent} {adj}",
           "will it be {weather} {when}", "is it {weather} outside", "which {kind} should i watch",
           "what should i eat {when}", "help me {vb} {obj}", "where do i {vb} {obj}", "what are you doing",
           "do you know {famous}", "who won {event}", "when is {event}", "was {famous} {adj}"],
    "mr": ["{ent_mr} कोणी {vpast_mr}", "{ent_mr} किती {adj_mr} आहे", "{obj_mr} कसे {v_mr}", "मला {obj_mr} हवे आहे",
           "मला {obj_mr} शिकायचे आहे", "माझा {mine_mr} कुठे आहे", "{event_mr} कधी सुरू होणार", "{shop_mr} {when_mr} उघडे आहे का",
           "एखादा चांगला {kind_mr} सुचव", "{city_mr}मधील चांगले {kind_mr} कोणते", "{ent_mr} बद्दल माहिती सांग",
           "{ent_mr}चा इतिहास सांग", "{when_mr} काय खाऊ", "{when_mr} {weather_mr} असेल का", "{event_mr} कोणी जिंकला",
           "{famous_mr} यांच्याबद्दल सांग", "{obj_mr} कुठे मिळेल", "मी {obj_mr} कसे {v_mr}", "तुला {famous_mr} माहीत आहेत का",
           "{ent_mr} इतका {adj_mr} का आहे", "{city_mr}ला कसे पोहोचायचे", "आज काय विशेष आहे"],
    "mixed": ["{ent} बद्दल सांग", "मला {obj} हवा आहे", "best {kind} सांग", "{kind} suggest कर", "{obj} कसे {v_mr}",
              "{event} कधी आहे", "{city} मध्ये चांगले {kind} कोणते", "{famous} कोण आहे", "{when_mr} weather {weather} असेल का",
              "{shop} open आहे का", "माझा {mine} सापडत नाही"],
}
GEN_FILL = {
    "vpast": ["invented", "discovered", "founded", "painted", "directed", "built", "won", "sang", "composed",
              "designed", "created", "owns", "named", "climbed", "first reached"],
    "ent": ["the eiffel tower", "mount everest", "the sun", "mars", "the pacific ocean", "the nile", "mumbai",
            "a blue whale", "the great wall", "bitcoin", "gold", "the rupee", "the internet", "chess", "cricket",
            "the olympics", "the taj mahal", "google", "the amazon forest", "an elephant", "the human brain",
            "coffee", "the monsoon", "the himalayas", "wikipedia", "the ipl", "netflix", "yoga"],
    "attr": ["population", "height", "price", "capital", "age", "history", "meaning", "length", "weight", "area",
             "origin", "speed", "size", "value"],
    "vb": ["fix", "cook", "learn", "clean", "grow", "cancel", "renew", "apply for", "install", "update",
           "pronounce", "pack", "plan", "paint", "sell", "rent", "wash", "iron", "bake", "write up"],
    "vb2": ["recommend", "suggest", "explain", "summarize", "translate", "read out", "book", "order",
            "look for", "describe", "compare", "remind me about", "note down", "forward"],
    "obj": ["a flat tire", "my password", "a passport", "pasta", "the guitar", "yoga", "python", "excel",
            "my subscription", "a car", "a bank account", "a loan", "a garden", "tomatoes", "a leave letter",
            "a trip to goa", "my resume", "a birthday party", "my visa", "a cake", "a sofa", "an old bike"],
    "mine": ["phone", "wallet", "keys", "glasses", "charger", "passport", "parcel", "car", "umbrella", "bag"],
    "event": ["the match", "the movie", "the sale", "diwali", "the concert", "the election", "school", "the ipl final",
              "the exam", "the world cup", "ganesh festival", "the next episode"],
    "shop": ["the bank", "the pharmacy", "the post office", "the mall", "dmart", "the library", "the gym"],
    "kind": ["restaurant", "movie", "book", "phone", "laptop", "hotel", "doctor", "gym", "song", "podcast",
             "series", "cafe", "school", "hospital", "tailor", "car", "game"],
    "adj": ["big", "old", "famous", "expensive", "hot", "cold", "popular", "important", "tall", "quick", "rich"],
    "weather": ["hot", "cold", "humid", "rainy", "windy", "cloudy", "foggy", "stormy", "chilly", "warm"],
    "ent_mr": ["आयफेल टॉवर", "एव्हरेस्ट", "सूर्य", "मंगळ", "गंगा नदी", "मुंबई", "देवी", "ताजमहाल", "सह्याद्री",
               "रायगड", "इंटरनेट", "बुद्धिबळ", "सोने", "रुपया", "पंढरपूर", "कोकण", "हत्ती", "पावसाळा"],
    "vpast_mr": ["बांधला", "शोधला", "जिंकला", "रचले", "स्थापन केले", "बनवले", "गायले", "चढले"],
    "adj_mr": ["उंच", "मोठा", "जुना", "लांब", "प्रसिद्ध", "महाग", "गरम", "थंड"],
    "obj_mr": ["पासवर्ड", "पासपोर्ट", "पोहे", "गिटार", "योग", "इंग्रजी", "गाडी", "बँक खाते", "कर्ज", "बाग", "टोमॅटो",
               "रजेचा अर्ज", "केक", "नवीन सोफा", "सायकल", "व्हिसा", "सहल"],
    "v_mr": ["बनवायचे", "शिकायचे", "दुरुस्त करायचे", "भरायचे", "रद्द करायचे", "विकायचे", "मिळवायचे", "शोधायचे"],
    "mine_mr": ["फोन", "पाकीट", "चष्मा", "चार्जर", "किल्ल्या", "पासपोर्ट", "छत्री"],
    "event_mr": ["सामना", "सिनेमा", "सेल", "दिवाळी", "निवडणूक", "शाळा", "परीक्षा", "गणेशोत्सव", "वर्ल्ड कप"],
    "shop_mr": ["बँक", "मेडिकल", "पोस्ट ऑफिस", "मॉल", "वाचनालय", "जिम"],
    "kind_mr": ["हॉटेल", "सिनेमा", "पुस्तक", "फोन", "डॉक्टर", "शाळा", "दवाखाना", "शिंपी", "खेळ"],
    "weather_mr": ["ऊन", "पाऊस", "गारवा", "धुके", "वारा", "उकाडा"],
}


def _none_generic(rng: random.Random) -> str:
    t = rng.choice(GENERIC[rng.choice(["en", "en", "mr", "mr", "mixed"])])
    for k in sorted(GEN_FILL, key=len, reverse=True):
        while "{" + k + "}" in t:
            t = t.replace("{" + k + "}", rng.choice(GEN_FILL[k]), 1)
    return _fill(rng, t)


# curiosity and how-to questions no child serves, composed from a frame and words (train)
QUESTIONS = {
    "en": ["how many {nouns} are there", "how many {nouns} live in {ent}", "how {adj} is {ent}", "how {adj} are {nouns}",
           "why are {nouns} so {adj}", "why do {nouns} {verb}", "do {nouns} {verb}", "can {nouns} {verb}",
           "where do {nouns} {verb}", "what do {nouns} eat", "what colour is {ent}", "is {ent} {adj}",
           "fun facts about {nouns}", "facts about {ent}", "pictures of {nouns}", "videos of {nouns}",
           "are {nouns} {adj}", "what is the {attr} of {ent}", "how to {vo}", "tips to {vo}", "should i {vo}",
           "is it safe to {vo}", "what's a good way to {vo}", "teach me to {vo}", "explain how {nouns} {verb}",
           "how long do {nouns} live", "which {nouns} are {adj}", "i'd like to {vo}", "how did people {vo} in the past",
           "is {ent} older than {ent}", "{ent} or {ent}, which is bigger", "why is {ent} {adj}", "learn to {vo}"],
    "mr": ["{nouns_mr} किती {adj_mr} असतात", "{nouns_mr} का {verb_mr}", "{nouns_mr} काय खातात",
           "{nouns_mr}बद्दल माहिती सांग", "{nouns_mr}चे फोटो दाखव", "{vo_mr} कसे शिकायचे", "{vo_mr}साठी टिप्स",
           "{vo_mr} सोपे आहे का", "{nouns_mr} कुठे राहतात", "{nouns_mr} किती वर्षे जगतात", "{ent_mr} किती {adj_mr} आहे",
           "मला {vo_mr} शिकायचे आहे", "{nouns_mr} खरंच {verb_mr} का", "{ent_mr}ची माहिती दे"],
    "mixed": ["{nouns_mr} बद्दल facts सांग", "{vo} कसं करायचं", "{nouns} का {verb_mr}", "{ent} किती {adj_mr} आहे",
              "{vo_mr} साठी tips दे", "{nouns} च्या photos दाखव"],
}
Q_FILL = {
    "nouns": ["spiders", "cats", "dogs", "elephants", "birds", "bees", "sharks", "penguins", "tigers", "whales", "ants",
              "frogs", "planets", "volcanoes", "rivers", "mountains", "trees", "flowers", "mangoes", "trains", "planes",
              "ships", "rockets", "robots", "batteries", "magnets", "clouds", "rainbows", "earthquakes", "dinosaurs",
              "bacteria", "vitamins", "teeth", "bones", "languages", "islands", "deserts", "coins", "pyramids", "owls",
              "snakes", "octopuses", "horses", "parrots", "crocodiles", "glaciers", "comets", "fireflies", "bats"],
    "verb": ["sleep", "fly", "swim", "migrate", "grow", "breathe", "float", "glow", "hibernate", "bite", "sing",
             "go pale", "live so long", "dream", "dance", "hunt at night", "lay eggs", "see colours"],
    "adj": ["big", "old", "heavy", "hot", "cold", "deep", "smart", "dangerous", "rare", "expensive", "poisonous", "loud",
            "tiny", "common", "healthy", "strong", "tall", "long", "bright", "slow"],
    "ent": ["the sun", "mars", "saturn", "the pacific", "mount everest", "the nile", "antarctica", "the human heart",
            "a blue whale", "the amazon", "a cheetah", "an ostrich egg", "the great wall of china", "the eiffel tower",
            "lake baikal", "the milky way", "a honeybee", "the arctic", "venus", "the ganga", "the sahyadris"],
    "attr": ["height", "age", "weight", "length", "temperature", "speed", "size", "depth", "colour"],
    "vo": ["learn guitar", "lose weight", "sleep better", "tie a tie", "boil an egg", "make tea", "save money",
           "grow tomatoes", "train a puppy", "write a cv", "learn swimming", "speak english", "remove a stain",
           "cure a cold", "meditate", "improve my memory", "quit smoking", "plant a tree", "jump higher", "whistle",
           "juggle", "paint a wall", "ride a bike", "pass an exam", "cook rice", "learn chess"],
    "nouns_mr": ["कोळी", "मांजरी", "कुत्रे", "हत्ती", "पक्षी", "मधमाश्या", "शार्क", "वाघ", "मुंग्या", "बेडूक", "ग्रह",
                 "ज्वालामुखी", "नद्या", "पर्वत", "झाडे", "फुले", "आंबे", "विमाने", "रोबोट", "ढग", "डायनासोर", "घुबड", "साप",
                 "घोडे", "पोपट", "मगरी", "काजवे", "वटवाघळे"],
    "verb_mr": ["उडतात", "झोपतात", "पोहतात", "चमकतात", "वाढतात", "स्थलांतर करतात", "गातात", "चावतात", "नाचतात"],
    "adj_mr": ["मोठे", "जुने", "जड", "गरम", "धोकादायक", "दुर्मिळ", "विषारी", "हुशार", "उंच", "लांब"],
    "ent_mr": ["सूर्य", "मंगळ", "शनी", "प्रशांत महासागर", "एव्हरेस्ट", "नाईल नदी", "अंटार्क्टिका", "देवगिरी किल्ला",
               "सिंहगड", "आकाशगंगा", "गंगा"],
    "vo_mr": ["गिटार वाजवणे", "वजन कमी करणे", "चांगली झोप", "चहा बनवणे", "पैसे वाचवणे", "टोमॅटो लावणे",
              "बायोडाटा लिहिणे", "पोहणे", "इंग्रजी बोलणे", "सर्दी बरी करणे", "ध्यान", "बुद्धिबळ", "सायकल चालवणे"],
}


def _none_question(rng: random.Random) -> str:
    t = rng.choice(QUESTIONS[rng.choice(["en", "en", "mr", "mixed"])])
    for k in sorted(Q_FILL, key=len, reverse=True):
        while "{" + k + "}" in t:
            t = t.replace("{" + k + "}", rng.choice(Q_FILL[k]), 1)
    return t


def _none_composed(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.35:
        return f"{rng.choice(NONE_VERBS)} {rng.choice(NONE_NOUNS)}"
    if r < 0.6:
        return f"{rng.choice(NONE_QUESTIONS)} {rng.choice(NONE_Q_NOUNS)}"
    return rng.choice(NONE_MR).replace("{x}", rng.choice(NONE_MR_NOUNS))


def _deva(s: str) -> bool:
    return any("\u0900" <= c <= "\u097f" for c in s)


def _say_value(rng: random.Random, v, deva: bool) -> str:
    from trainer.agentdata.numbers import say

    whole = float(v).is_integer()
    kind = rng.choice(["digits", "deva", "mr_words"] if deva else ["digits", "digits", "en_words"]) if whole else "digits"
    s = say(int(v) if whole else v, kind)
    return s + rng.choice(["", "%", " टक्के", " अंश"] if deva else ["", "%", " percent", " degrees"])


def _home_paraphrase(rng: random.Random, line: dict, frames=None) -> str:
    """Another phrasing of a home training line, built from its call; `frames` = (English frames,
    Marathi frames, stray verbs), HOME_EN, HOME_MR and HOME_ANYVERB by default."""
    frames_en, frames_mr, anyverb = frames or (HOME_EN, HOME_MR, HOME_ANYVERB)
    call = line["call"]
    intent = call.get("intent", "HassTurnOn")
    thing = call.get("name") or call.get("area") or ""
    deva = _deva(thing) or line.get("category") in ("mr", "mixed")
    if "name" not in call and "area" in call:
        dom = call.get("domain")
        if deva:
            thing = f"{call['area']}{rng.choice(['मधले', 'तले', ' मधले सगळे', 'चे'])} {DOMAIN_MR.get(dom, 'सगळं')}"
        else:
            thing = f"the {DOMAIN_EN.get(dom, 'everything')} in the {call['area']}" if dom else f"everything in the {call['area']}"
    elif not deva and rng.random() < 0.6:
        thing = "the " + thing
    value = next((call[k] for k in ("brightness", "temperature", "position") if k in call), None)
    r = rng.random()
    if r < 0.15:     # the device alone, or with a stray word where the verb was
        text = thing if rng.random() < 0.5 else f"{rng.choice(anyverb)} {thing}" if not deva else \
            f"{thing} {rng.choice(['कर', 'करा', 'बघ', 'ठेव', 'on', 'off'])}"
    elif r < 0.3 and not deva:
        text = f"{rng.choice(anyverb)} {thing}" + (f" {rng.choice(['to', 'at'])} {_say_value(rng, value, False)}"
                                                        if value is not None else "")
    else:
        frames = (frames_mr if deva else frames_en).get(intent) or ["{X}"]
        text = rng.choice(frames).replace("{X}", thing)
    if "{V}" in text or value is not None and "{V}" not in text and rng.random() < 0.2:
        v = _say_value(rng, value if value is not None else rng.randint(10, 90), deva)
        text = text.replace("{V}", v) if "{V}" in text else f"{text} {v}"
    return text


def _calc_paraphrase(rng: random.Random, line: dict, frames=None) -> str:
    """Another phrasing of a calc training line: its text or a fresh expression in a frame (of
    CALC_FRAMES, or `frames`)."""
    from trainer.agentdata.numbers import say

    frames = frames or CALC_FRAMES
    r = rng.random()
    kind = rng.choice(["digits", "digits", "deva", "en_words", "mr_words"])

    def num():
        return say(rng.randint(0, 99 if kind.endswith("words") else 999), kind)

    if r < 0.5:
        e = line["text"]
    elif r < 0.75:              # a fresh expression: digits, Devanagari digits, number words, operators
        k = rng.randint(2, 4)
        nums = [num() for _ in range(k)]
        col = 2 if kind in ("mr_words", "deva") and rng.random() < 0.7 else rng.choice([0, 0, 1])
        ops = [rng.choice(CALC_OPS)[col] for _ in range(k - 1)]
        e = nums[0] + "".join(f" {o} {x}" for o, x in zip(ops, nums[1:]))
    else:                       # a fresh one-number operation, percentage or list
        lang = "mr" if kind in ("mr_words", "deva") and rng.random() < 0.7 else "en"
        items = [num() for _ in range(rng.randint(2, 5))]
        and_ = " आणि " if lang == "mr" else " and "
        e = (rng.choice(CALC_UNARY[lang]).replace("{a}", num()).replace("{b}", num())
             .replace("{L}", ", ".join(items[:-1]) + and_ + items[-1]))
    return rng.choice(frames).replace("{E}", e)


def _wrap(rng: random.Random, text: str, wrap: dict) -> str:
    return rng.choice(wrap["pre"]) + text + rng.choice(wrap["post"])


def _noise(rng: random.Random, text: str, banned: set) -> str:
    from trainer.agentdata.noise import add_noise

    return add_noise(rng, text, [], banned, p=0.35)


# -------------------------------------------------------------------------------------------------
# the test vocabulary that train and dev must not hold
# -------------------------------------------------------------------------------------------------
_WORD_SPLIT = re.compile(r"[\s,.:;!?()'\"]+")


def _words(s: str) -> set:
    return {w for w in _WORD_SPLIT.split(re.sub(r"\{[^}]*\}", " ", s.lower())) if w}


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


# words any phrasing may hold; a test template holding one does not make it the test's own
FUNCTION = set("a an the to of in on at for from with about up down out over away by as is are am was be do does "
               "did how who what when where which why there here it me my you your i we and or this that s now any some".split()
               + "आहे का ला मध्ये मला कुठे च्या".split())
# everyday words of the test's reject frames and requests that the train pools use on purpose, in
# other frames ("who invented ...", "मराठीत लिहा"): the test frames stay unseen, their words do not
SHARED = {"none": {"buy", "day", "meeting", "thank", "take", "give", "find", "nearest", "minute", "share",
                   "start", "going", "tell", "say", "लाव", "सांग", "बातम्या", "कोणी", "वाजता"},
          "fortunes": {"say", "share", "line", "got"},
          "marathi": {"मराठी", "मराठीत", "लिहा", "पुढे", "वाक्य", "चालू", "करा", "छोटा", "एक"}}
_BANNED: dict | None = None
_TRAIN_VOCAB: set = set()


def banned_words(label: str | None = None) -> set:
    """Words of the test split's phrasings that the train and dev pools of `label` (home, calc,
    none, fortunes, marathi) must not hold: for home and calc, the words of the agent generators'
    test and novel templates and fillers that their training data does not use; for none and the
    requests, the words of this module's test pools less FUNCTION and SHARED; and for every label
    (label None: these alone) any of those words that neither agent's training data uses, so that
    no pool teaches a test-only word even as a sign of another label."""
    global _BANNED
    if _BANNED is None:
        from trainer.agentdata import calc, home, noise, numbers

        _BANNED = {}
        vocab = set()
        for name, mod, n in (("home", home, 3000), ("calc", calc, 2000)):
            test, train = set(), set(noise.COMMON)
            for s in _strings([mod.T["test"], mod.T.get("novel"), mod.PRE["test"], mod.POST["test"]]):
                test |= _words(s)
            for s in _strings([mod.T["train"], mod.PRE["train"], mod.POST["train"]]):
                train |= _words(s)
            for ln in mod.generate("train", n, 1):
                train |= _words(ln["text"])
            for k in range(101):
                train |= _words(numbers.en_words(k) + " " + numbers.mr_words(k))
            _BANNED[name] = test - train - FUNCTION
            vocab |= train
        _TRAIN_VOCAB.clear()
        _TRAIN_VOCAB.update(vocab)
        for name, pool in (("none", NONE_FRAMES["test"]), ("fortunes", REQUESTS["test"]["fortunes"]),
                           ("marathi", REQUESTS["test"]["marathi"])):
            _BANNED[name] = set().union(*map(_words, pool)) - FUNCTION - SHARED[name]
        _BANNED[None] = set().union(*_BANNED.values()) - _TRAIN_VOCAB
    return _BANNED[None] if label is None else _BANNED[label] | _BANNED[None]


def train_pools() -> dict:
    """Every phrasing pool the train and dev splits draw from, by the label whose test words it must
    avoid (label None: any label's). Slot words (FILL) are shared by all splits."""
    return {"none": [NONE_FRAMES["train"], NONE_FRAMES["dev"], NONE_VERBS, NONE_NOUNS, NONE_QUESTIONS,
                     NONE_Q_NOUNS, NONE_MR, NONE_MR_NOUNS, GENERIC, GEN_FILL, QUESTIONS, Q_FILL],
            "fortunes": [REQUESTS["train"]["fortunes"], REQUESTS["dev"]["fortunes"]],
            "marathi": [REQUESTS["train"]["marathi"], REQUESTS["dev"]["marathi"]],
            "home": [HOME_EN, HOME_MR, HOME_ANYVERB, DOMAIN_EN, DOMAIN_MR, DEV_HOME_EN, DEV_HOME_MR, DEV_HOME_ANYVERB],
            "calc": [CALC_FRAMES, CALC_OPS, CALC_UNARY, DEV_CALC_FRAMES],
            None: [WRAP, DEV_WRAP]}


# -------------------------------------------------------------------------------------------------
# corpora and the generator
# -------------------------------------------------------------------------------------------------
_CORPUS_SLICE = {"test": (0,), "dev": (5,), "train": (1, 2, 3, 4, 6, 7, 8, 9)}


def _corpus_texts(path, split: str) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        for i, s in enumerate(fh):
            if i % 10 not in _CORPUS_SLICE[split] or not s.strip():
                continue
            try:
                t = json.loads(s).get("text")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(t, str) and t.strip():
                texts.append(t)
    if not texts:
        raise ValueError(f"{path}: no usable {{\"text\": ...}} record for the {split} split")
    return texts


class _Vocab(list):
    """Words of the corpora to put into lines; `pick` draws one uniformly, or, with `weighted`,
    in proportion to the square root of its count, so that the words a corpus uses most also turn
    up in the lines of the other labels and do not name the corpus's label on their own."""

    def __init__(self, counts: dict, weighted: bool):
        super().__init__(sorted(counts))
        self.cum = None
        if weighted:
            acc, self.cum = 0.0, []
            for w in self:
                acc += counts[w] ** 0.5
                self.cum.append(acc)

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self) if self.cum is None else rng.choices(self, cum_weights=self.cum)[0]


def _corpus_words(texts: list[str], banned: set, min_count: int = 2, weighted: bool = False) -> _Vocab:
    """Words (lower case, letters only, at least 3 characters, seen min_count times) of a corpus."""
    from collections import Counter

    c = Counter(w for t in texts for w in _WORD_SPLIT.split(t.lower())
                if len(w) >= 3 and all(ch.isalpha() or "\u0900" <= ch <= "\u097f" for ch in w))
    return _Vocab({w: k for w, k in c.items() if k >= min_count and w not in banned}, weighted)


def _insert_words(rng: random.Random, text: str, vocab: _Vocab) -> str:
    """1-3 words of `vocab` at random word boundaries of text: words that say nothing of the label."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randint(0, len(words)), vocab.pick(rng))
    return " ".join(words)


NONE_SWAP = 0.3   # share of the reject training lines with a word swapped for a corpus word


def _swap_word(rng: random.Random, text: str, vocab: _Vocab) -> str:
    """text with one of its words of 3+ letters (not a FUNCTION word) replaced by a word of `vocab`:
    a request keeps its shape whatever it asks about, so an unknown word in a request's shape does
    not make it the text of a corpus."""
    words = text.split()
    spots = [i for i, w in enumerate(words) if len(w) >= 3 and w not in FUNCTION]
    if spots:
        words[rng.choice(spots)] = vocab.pick(rng)
    return " ".join(words)


_CONS, _VOW = "bcdfghjklmnprstvwyz", "aeiou"
_DEV_CONS = "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह"
_DEV_VOW = ["", "ा", "ि", "ी", "ु", "ू", "े", "ै", "ो", "ौ"]


def _madeup_word(rng: random.Random) -> str:
    """A word no language has: unseen n-grams that must say nothing of the label."""
    if rng.random() < 0.5:
        return "".join(rng.choice(_CONS) + rng.choice(_VOW) for _ in range(rng.randint(2, 3)))
    return "".join(rng.choice(_DEV_CONS) + rng.choice(_DEV_VOW) for _ in range(rng.randint(2, 3)))


def _insert_madeup(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randint(0, len(words)), _madeup_word(rng))
    return " ".join(words)


SHORT = {"marathi": 0.2}   # share of a corpus's training prompts cut to 1-3 words


def _corpus_prompts(texts: list[str], rng: random.Random, max_chars: int = 80, short: float = 0.0,
                    banned: set | None = None):
    """Prompt-sized pieces of corpus records: a random start in the first half of a record, up to
    max_chars. With `short`, that share of the pieces is one to three words (a place name, an
    interface string, a title: the corpora hold many such lines). With `banned`, the words of a
    piece that only the test split's phrasings use are left out (`_drop_words`)."""
    while True:
        words = rng.choice(texts).split()
        if banned:
            words = _drop_words(words, banned)
        start = rng.randrange(0, max(1, len(words) // 2))
        limit = rng.randint(1, 3) if short and rng.random() < short else len(words)
        out = []
        for w in words[start:start + limit]:
            if out and len(" ".join(out + [w])) > max_chars:
                break
            out.append(w)
        if out:
            yield " ".join(out)


def _drop_words(words: list[str], banned: set) -> list[str]:
    """words less those that, lower-cased and stripped of punctuation, are test-only words: in
    training, a corpus line must not teach a word of the test's home, calc or request phrasings
    as a sign of its own child (fortunes would otherwise own "would", "check", "stop", marathi
    "करून", "लगेच"), just as no pool may hold one."""
    return [w for w in words if not set(filter(None, _WORD_SPLIT.split(w.lower()))) & banned]


def generate(split: str = "train", n: int = 1000, seed: int = 0, sources: dict | None = None):
    """n lines, labels drawn evenly among home, calc, null and the text children in `sources`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from trainer.agentdata import calc, home

    sources = sources or {}
    for name in sources:
        if name not in ("marathi", "fortunes"):
            raise ValueError(f"routing sources are marathi and fortunes, got {name!r}")
        if not Path(sources[name]).is_file():
            raise ValueError(f"routing source {name}: {sources[name]} does not exist")
    rng = random.Random(f"routing/{split}/{seed}")
    agent_split, agent_seed = ("test", seed) if split == "test" else ("train", seed if split == "train" else seed + 1000)
    gens = {"home": home.generate(agent_split, n, agent_seed), "calc": calc.generate(agent_split, n, agent_seed)}
    texts = {name: _corpus_texts(p, split) for name, p in sources.items()}
    labels = ["home", "calc", None] + sorted(sources)
    train = split == "train"
    wrap = WRAP if train else DEV_WRAP
    banned = set().union(*map(banned_words, ("home", "calc", "none", "fortunes", "marathi"))) if split != "test" else set()
    corpora = {name: _corpus_prompts(t, random.Random(f"{name}/{split}/{seed}"),
                                     short=SHORT.get(name, 0.0) if train else 0.0, banned=banned if train else None)
               for name, t in texts.items()}
    # stray words for the train and dev lines: words of the corpora's own slice (so dev's differ)
    vocab = _corpus_words([t for ts in texts.values() for t in ts], banned, weighted=train) if split != "test" else []
    for _ in range(n):
        lab = rng.choice(labels)
        if lab in ("home", "calc"):
            line = next(gens[lab])
            text = line["text"]
            if split != "test" and rng.random() < 0.5:
                dev_frames = (DEV_HOME_EN, DEV_HOME_MR, DEV_HOME_ANYVERB) if lab == "home" else DEV_CALC_FRAMES
                text = (_home_paraphrase if lab == "home" else _calc_paraphrase)(rng, line, None if train else dev_frames)
            if split != "test" and rng.random() < 0.3:
                text = _wrap(rng, text, wrap)
            if vocab and rng.random() < (0.3 if train else 0.5):
                text = _insert_words(rng, text, vocab)
            if split != "test" and rng.random() < (0.15 if train else 0.5):
                text = _insert_madeup(rng, text)
            if split != "test":
                text = _noise(rng, text, banned)
            yield {"text": text, "child": lab, "category": lab}
        elif lab is None:
            r = rng.random() if train else 1.0
            if r < 0.15:
                text = _none_composed(rng)
            elif r < 0.4:
                text = _none_generic(rng)
            elif r < 0.6:
                text = _none_question(rng)
            else:
                text = (_fill_test if split == "test" else _fill)(rng, rng.choice(NONE_FRAMES[split]))
            if split != "test" and rng.random() < 0.3:
                text = _wrap(rng, text, wrap)
            if vocab and train and rng.random() < NONE_SWAP:
                text = _swap_word(rng, text, vocab)
            if vocab and train and rng.random() < 0.3:
                text = _insert_words(rng, text, vocab)
            if train and rng.random() < 0.15:
                text = _insert_madeup(rng, text)
            if train:
                text = _noise(rng, text, banned)
            yield {"text": text, "child": None, "category": "none"}
        elif rng.random() < 0.2:
            text = (_fill_test if split == "test" else _fill)(rng, rng.choice(REQUESTS[split][lab]))
            if train and rng.random() < 0.3:
                text = _noise(rng, _wrap(rng, text, wrap), banned)
            if train and rng.random() < 0.15:
                text = _insert_madeup(rng, text)
            yield {"text": text, "child": lab, "category": lab + "/request"}
        else:
            text = next(corpora[lab])
            if train and rng.random() < 0.15:
                text = _insert_madeup(rng, text)
            yield {"text": text, "child": lab, "category": lab}
