"""Build data/support_qa.jsonl: the bundled customer-support Q/A set for kvserve.

The product is fictional: the Lumo Hearth smart thermostat made by Vellmont Labs. Every fact
below was written for this project (CC0 1.0, no third-party text). Each fact is one canonical
answer plus exactly four question phrasings. Fact ids follow list order (f001, f002, ...).
For fact number i (0-based) the phrasing at index i % 4 is "heldout" and the other three are
"train", so the heldout phrasings rotate through the styles.

Usage:
    python data/build_support_qa.py [OUTPUT_PATH]

OUTPUT_PATH defaults to data/support_qa.jsonl next to this script. Output is deterministic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().with_name("support_qa.jsonl")
PHRASINGS_PER_FACT = 4
MIN_FACTS = 160
MIN_ANSWER_WORDS = 4
MAX_ANSWER_WORDS = 20

# Each fact: (answer, question 1, question 2, question 3, question 4).
FACTS: list[tuple[str, str, str, str, str]] = [
    # --- Company and product basics ---
    (
        "The Lumo Hearth is made by Vellmont Labs, based in Duluth, Minnesota.",
        "Who makes the Lumo Hearth?",
        "What company is behind the Lumo Hearth?",
        "Lumo Hearth manufacturer",
        "Which brand produces this thermostat?",
    ),
    (
        "The Lumo Hearth retail price is 179 US dollars.",
        "How much does the Lumo Hearth cost?",
        "What's the price of a Lumo Hearth thermostat?",
        "Lumo Hearth price",
        "How much will I pay for one thermostat?",
    ),
    (
        "The Lumo Hearth comes in Chalk, Graphite, and Brass finishes.",
        "What colors does the Lumo Hearth come in?",
        "Which finishes are available for the thermostat?",
        "Lumo Hearth colour options",
        "Can I get the thermostat in a different color?",
    ),
    (
        "The Lumo Hearth has a 2.4-inch round color display inside a rotating dial.",
        "How big is the Lumo Hearth screen?",
        "What kind of display does the thermostat have?",
        "screen size",
        "What are the display dimensions on the Lumo Hearth?",
    ),
    (
        "The current Lumo Hearth model number is LH-2, printed on the back plate.",
        "What is the model number of my thermostat?",
        "Where do I find the Lumo Hearth model number?",
        "model number",
        "Which model of Lumo Hearth is the current one?",
    ),
    (
        "The serial number is in the app under Settings, Device Info, or on the back plate.",
        "Where can I find my serial number?",
        "How do I look up the thermostat's serial number?",
        "serial number location",
        "What's the way to see my device serial?",
    ),
    (
        "The box has the thermostat, base plate, trim plate, Power Link, screws, and labels.",
        "What comes in the Lumo Hearth box?",
        "What's included with the thermostat?",
        "box contents",
        "Which parts are shipped in the retail package?",
    ),
    (
        "The Lumo Hearth measures 84 millimetres across and weighs 190 grams.",
        "How big is the thermostat overall?",
        "What are the Lumo Hearth's dimensions?",
        "thermostat weight",
        "How heavy is the Lumo Hearth?",
    ),
    (
        "Vellmont Labs was founded in 2019 and released the first Lumo Hearth in 2021.",
        "When was Vellmont Labs founded?",
        "How long has Vellmont been around?",
        "Vellmont founding year",
        "What year did the company start?",
    ),
    (
        "Vellmont estimates the Lumo Hearth saves about 10 percent on heating and cooling bills.",
        "How much energy can I save?",
        "Will the Lumo Hearth lower my bills?",
        "estimated savings",
        "What percentage can I save on heating and cooling?",
    ),
    # --- App ---
    (
        "Download the free Vellmont Home app from the App Store or Google Play.",
        "Which app do I use to control the Lumo Hearth?",
        "Where do I get the thermostat app?",
        "app download",
        "What's the name of the Lumo Hearth companion app?",
    ),
    (
        "The Vellmont Home app needs iOS 16 or later, or Android 11 or later.",
        "What phones does the Vellmont Home app support?",
        "Minimum iOS or Android version for the app?",
        "app system requirements",
        "Will the app run on my older phone?",
    ),
    (
        "In the app tap Add Device, then scan the QR code on the back of the display.",
        "How do I add my thermostat to the app?",
        "What's the way to pair the Lumo Hearth with my phone?",
        "add device to app",
        "Can I set up the thermostat using the app?",
    ),
    (
        "Setup uses Bluetooth Low Energy, so keep your phone within 10 feet of the thermostat.",
        "Does setup use Bluetooth?",
        "How close does my phone need to be during setup?",
        "setup bluetooth range",
        "Why does the app say to stay near the thermostat while pairing?",
    ),
    (
        "One Vellmont Home account can control up to 10 thermostats in a home.",
        "How many thermostats can one account control?",
        "Can I manage several Lumo Hearth units from the same app?",
        "max thermostats per account",
        "Is there a limit on devices per account?",
    ),
    (
        "The app offers home screen widgets on both iOS and Android.",
        "Does the app have a home screen widget?",
        "Can I add a thermostat widget to my phone?",
        "widgets",
        "Is there a widget for quick temperature changes?",
    ),
    (
        "Turn notifications on or off in the app under Settings, Notifications.",
        "How do I stop push notifications?",
        "Where do I change alert settings?",
        "notification settings",
        "Can I turn off app alerts?",
    ),
    (
        "The app is available in English, French, and Spanish.",
        "What languages does the app support?",
        "Is the app available in French?",
        "app languages",
        "Can I switch the app to Spanish?",
    ),
    (
        "Switch units in the app under Settings, Display, Temperature Units.",
        "How do I change from Fahrenheit to Celsius?",
        "Can the thermostat show Celsius?",
        "celsius setting",
        "What's the way to switch temperature units?",
    ),
    # --- Subscription plans ---
    (
        "There are three plans: Free, Hearth Plus, and Hearth Pro.",
        "What subscription plans are available?",
        "Which plans does Vellmont offer?",
        "subscription tiers",
        "How many plan options are there?",
    ),
    (
        "Hearth Plus costs 4 dollars per month or 40 dollars per year.",
        "How much is Hearth Plus?",
        "What does the Hearth Plus plan cost?",
        "Hearth Plus price",
        "Is Hearth Plus cheaper if I pay yearly?",
    ),
    (
        "Hearth Pro costs 9 dollars per month or 90 dollars per year.",
        "How much is Hearth Pro?",
        "What's the monthly fee for Hearth Pro?",
        "Hearth Pro pricing",
        "What does the annual Hearth Pro plan cost?",
    ),
    (
        "The Free plan includes schedules, remote control, and 7 days of temperature history.",
        "What do I get without a subscription?",
        "What's included in the Free plan?",
        "free plan features",
        "Does the thermostat work without paying monthly?",
    ),
    (
        "Hearth Plus adds energy reports, 2 years of history, and a 4-year warranty.",
        "What does Hearth Plus include?",
        "Why should I upgrade to Hearth Plus?",
        "Hearth Plus features",
        "What extra features come with the Plus plan?",
    ),
    (
        "Hearth Pro adds everything in Plus, up to 5 homes, and HVAC fault alerts.",
        "What does Hearth Pro include?",
        "What's the difference between Plus and Pro?",
        "Hearth Pro features",
        "What do I get with Hearth Pro that Plus lacks?",
    ),
    (
        "New accounts get a 30-day free trial of Hearth Plus.",
        "Is there a free trial?",
        "Can I try Hearth Plus before paying?",
        "free trial length",
        "How long is the Hearth Plus trial?",
    ),
    (
        "Cancel anytime in the app under Settings, Subscription, Cancel Plan.",
        "How do I cancel my subscription?",
        "Where can I cancel Hearth Plus?",
        "cancel plan",
        "What's the way to end my subscription?",
    ),
    (
        "After cancelling, paid features stay active until the end of the current billing period.",
        "What happens when I cancel my plan?",
        "Do I lose features right away if I cancel?",
        "access after cancellation",
        "Can I keep using Plus until my billing period ends?",
    ),
    (
        "Upgrades take effect immediately and the price difference is prorated.",
        "How do upgrades get billed?",
        "Is an upgrade from Plus to Pro prorated?",
        "plan upgrade proration",
        "When does a plan upgrade start?",
    ),
    (
        "Downgrades take effect at the start of your next billing period.",
        "When does a downgrade take effect?",
        "If I move from Pro to Plus, when does it change?",
        "downgrade timing",
        "Can I downgrade my plan mid-cycle?",
    ),
    (
        "One subscription covers the whole home, including every invited household member.",
        "Does each household member need their own subscription?",
        "Is one subscription enough for my whole family?",
        "subscription sharing household",
        "Do shared users get Plus features?",
    ),
    # --- Billing ---
    (
        "We accept Visa, Mastercard, American Express, Discover, and PayPal.",
        "What payment methods do you accept?",
        "Can I pay with PayPal?",
        "accepted cards",
        "Which credit cards work for ordering?",
    ),
    (
        "Subscriptions renew on the same calendar day you first subscribed.",
        "When am I billed each month?",
        "What day does my subscription renew?",
        "renewal date",
        "How is my billing date decided?",
    ),
    (
        "Invoices are in the app under Settings, Subscription, Billing History.",
        "Where can I find my invoices?",
        "How do I download a receipt for my subscription?",
        "billing history",
        "Can I see past charges in the app?",
    ),
    (
        "Update your card in the app under Settings, Subscription, Payment Method.",
        "How do I change my payment card?",
        "My card expired, how do I update it?",
        "update payment method",
        "What's the way to add a new credit card?",
    ),
    (
        "After a failed payment we retry for 7 days before pausing paid features.",
        "What happens if my payment fails?",
        "Will I lose Hearth Plus if my card is declined?",
        "failed payment retry",
        "How long do you retry a declined charge?",
    ),
    (
        "Annual plans cancelled within 14 days of renewal get a full refund.",
        "Can I get a refund on my annual plan?",
        "Is the yearly subscription refundable?",
        "annual plan refund",
        "I forgot to cancel before renewal, can I get my money back?",
    ),
    (
        "Customers are charged in US dollars in the US and Canadian dollars in Canada.",
        "What currency will I be charged in?",
        "Are prices in Canadian dollars for Canada?",
        "billing currency",
        "Do Canadian customers pay in USD?",
    ),
    (
        "Sales tax is calculated at checkout based on your shipping address.",
        "Do you charge sales tax?",
        "How is tax calculated on my order?",
        "sales tax",
        "Is tax included in the listed price?",
    ),
    (
        "Vellmont gift cards come in 25, 50, and 100 dollar amounts.",
        "Do you sell gift cards?",
        "What gift card amounts are available?",
        "gift cards",
        "Can I buy a Vellmont gift card for someone?",
    ),
    (
        "Enter promo codes in the Discount Code box on the checkout page.",
        "Where do I enter a promo code?",
        "How do I use a discount code?",
        "coupon code",
        "Can I apply a coupon when ordering?",
    ),
    # --- Shipping ---
    (
        "Standard shipping is free on orders over 50 dollars.",
        "Is shipping free?",
        "Do you offer free shipping?",
        "free shipping threshold",
        "How much do I need to spend for free delivery?",
    ),
    (
        "Standard shipping takes 3 to 5 business days.",
        "How long does standard shipping take?",
        "When will my order arrive with standard delivery?",
        "standard delivery time",
        "How many days for regular shipping?",
    ),
    (
        "Express shipping costs 15 dollars and arrives in 1 to 2 business days.",
        "Do you have express shipping?",
        "How much is faster delivery?",
        "express shipping cost",
        "Can I get my thermostat in two days?",
    ),
    (
        "Orders placed before 2 pm Eastern on business days ship the same day.",
        "When will my order ship?",
        "What's the same-day shipping cutoff?",
        "order cutoff time",
        "If I order this morning, does it ship today?",
    ),
    (
        "We ship to the United States and Canada only.",
        "Which countries do you ship to?",
        "Do you ship internationally?",
        "shipping destinations",
        "Can I order from the UK?",
    ),
    (
        "A tracking link is emailed as soon as your order ships.",
        "How do I track my order?",
        "Where is my tracking number?",
        "order tracking",
        "Will I get a shipping confirmation email?",
    ),
    (
        "We can ship to PO boxes using standard shipping only.",
        "Do you deliver to PO boxes?",
        "Can express orders go to a PO box?",
        "PO box shipping",
        "Is it possible to ship to a post office box?",
    ),
    (
        "You can change the shipping address within 1 hour of placing the order.",
        "Can I change my shipping address after ordering?",
        "How long do I have to edit my delivery address?",
        "change address after order",
        "I entered the wrong address, can I fix it?",
    ),
    (
        "Canadian orders ship from Winnipeg, so there are no customs duties.",
        "Will I pay customs duties in Canada?",
        "Are there import fees for Canadian orders?",
        "Canada duties",
        "Where do Canadian orders ship from?",
    ),
    (
        "Report a lost package within 30 days of the ship date for a free replacement.",
        "My package never arrived, what do I do?",
        "What if my order is lost in transit?",
        "lost package",
        "How long do I have to report a missing delivery?",
    ),
    (
        "Send photos of damaged items to support within 7 days of delivery.",
        "My thermostat arrived damaged, what should I do?",
        "What if the box was crushed in shipping?",
        "damaged delivery",
        "How do I report a broken item on arrival?",
    ),
    # --- Returns ---
    (
        "You can return the Lumo Hearth within 60 days of delivery.",
        "What is your return policy?",
        "How long do I have to return the thermostat?",
        "return window",
        "Can I return it after a month?",
    ),
    (
        "Start a return in the app or on the website under Orders, Return Item.",
        "How do I start a return?",
        "Where do I request a return?",
        "start return",
        "What's the way to send my thermostat back?",
    ),
    (
        "Return shipping is free using the prepaid label we email you.",
        "Do I pay for return shipping?",
        "Is the return label free?",
        "return shipping cost",
        "Who covers the cost of sending it back?",
    ),
    (
        "Refunds reach your original payment method within 5 to 7 business days of receipt.",
        "How long does a refund take?",
        "When will I get my money back?",
        "refund timing",
        "How many days until my refund shows up?",
    ),
    (
        "Opened and installed units can be returned, and there is no restocking fee.",
        "Can I return an opened thermostat?",
        "Is there a restocking fee?",
        "opened box returns",
        "I already installed it, can I still return it?",
    ),
    (
        "To exchange for another finish, return the original and place a new order.",
        "Can I exchange for a different color?",
        "How do I swap my Chalk unit for Graphite?",
        "color exchange",
        "Do you do direct exchanges?",
    ),
    (
        "Items bought from other retailers must be returned to that retailer.",
        "I bought it at a store, can I return it to you?",
        "Can you process returns for retailer purchases?",
        "third-party store returns",
        "Where do I return a Lumo Hearth bought elsewhere?",
    ),
    (
        "Accessories can be returned unopened within 30 days of delivery.",
        "Can I return a room sensor?",
        "What's the return window for accessories?",
        "accessory returns",
        "How long do I have to return a trim plate?",
    ),
    # --- Warranty ---
    (
        "The Lumo Hearth has a 2-year limited warranty from the date of purchase.",
        "How long is the warranty?",
        "What warranty comes with the thermostat?",
        "warranty length",
        "Is the Lumo Hearth covered by a warranty?",
    ),
    (
        "Active Hearth Plus or Pro subscribers get the warranty extended to 4 years.",
        "Can I extend my warranty?",
        "Does a subscription lengthen the warranty?",
        "extended warranty",
        "How do I get a 4-year warranty?",
    ),
    (
        "The warranty covers defects in materials and workmanship, not accidental damage.",
        "What does the warranty cover?",
        "Is accidental damage covered?",
        "warranty coverage",
        "Will the warranty pay for a cracked screen I caused?",
    ),
    (
        "File a warranty claim in the app under Help, Warranty Claim, with your serial number.",
        "How do I make a warranty claim?",
        "Where do I file a warranty request?",
        "warranty claim",
        "What do I need to submit a warranty claim?",
    ),
    (
        "Approved claims get a replacement unit shipped free within 3 business days.",
        "What happens after my warranty claim is approved?",
        "How fast will I get a warranty replacement?",
        "warranty replacement shipping",
        "Do I pay shipping for a warranty replacement?",
    ),
    (
        "Units bought from retailers need a receipt as proof of purchase for warranty service.",
        "Do I need a receipt for warranty service?",
        "What proof of purchase is required?",
        "warranty receipt",
        "I bought mine at a shop, what do I need for a claim?",
    ),
    (
        "Installing the thermostat yourself does not void the warranty.",
        "Does DIY installation void the warranty?",
        "Will the warranty stay valid if I install it myself?",
        "self install warranty",
        "Do I need a pro install to keep coverage?",
    ),
    (
        "Accessories such as the Room Sensor carry a 1-year limited warranty.",
        "What's the warranty on accessories?",
        "How long is the Room Sensor warranty?",
        "accessory warranty",
        "Are sensors covered under warranty?",
    ),
    # --- Compatibility and installation ---
    (
        "The Lumo Hearth works with most 24-volt heating and cooling systems.",
        "Is the Lumo Hearth compatible with my system?",
        "What HVAC systems does it work with?",
        "system compatibility",
        "Does it support low-voltage systems?",
    ),
    (
        "It is not compatible with 120 or 240 volt line-voltage baseboard heaters.",
        "Does it work with baseboard heaters?",
        "Can I use it with line-voltage heating?",
        "baseboard heater compatibility",
        "Will the thermostat run electric baseboard heat?",
    ),
    (
        "Use the compatibility checker in the app before buying to confirm your wiring.",
        "How can I check compatibility before I buy?",
        "Is there a wiring compatibility tool?",
        "compatibility checker",
        "What's the way to confirm my wires will work?",
    ),
    (
        "A C-wire is recommended; without one, install the included Power Link adapter.",
        "Do I need a C-wire?",
        "What if I don't have a common wire?",
        "c-wire requirement",
        "Can I install it without a C-wire?",
    ),
    (
        "The Power Link adapter connects at your furnace control board, not at the thermostat.",
        "Where does the Power Link adapter go?",
        "How do I install the Power Link?",
        "power link placement",
        "Does the Power Link attach behind the thermostat?",
    ),
    (
        "Most do-it-yourself installations take about 30 minutes.",
        "How long does installation take?",
        "How much time do I need to install it?",
        "install time",
        "Can I install it in under an hour?",
    ),
    (
        "You only need a Phillips screwdriver, plus a drill if you need new wall anchors.",
        "What tools do I need to install it?",
        "Do I need a drill?",
        "installation tools",
        "Which screwdriver should I use?",
    ),
    (
        "Turn off power to your HVAC system at the breaker before removing the old thermostat.",
        "What should I do before removing my old thermostat?",
        "Do I need to cut the power first?",
        "safety before install",
        "Should I switch off the breaker?",
    ),
    (
        "The app asks you to photograph your old wiring for reference before disconnecting it.",
        "Should I take a picture of my old wires?",
        "How do I remember which wire went where?",
        "old wiring photo",
        "Why does the app ask for a photo of my wiring?",
    ),
    (
        "The base plate has 10 push-in terminals: R, Rc, C, W1, W2, Y1, Y2, G, O/B, and ACC.",
        "What terminals are on the base plate?",
        "Which wires can I connect?",
        "terminal list",
        "How many wire terminals does it have?",
    ),
    (
        "No jumper is needed; the base plate links R and Rc automatically when one is empty.",
        "Do I need a jumper between R and Rc?",
        "What if I only have one R wire?",
        "R and Rc jumper",
        "Should I connect a wire to Rc?",
    ),
    (
        "It supports up to 2 heating stages and 2 cooling stages.",
        "How many heating stages are supported?",
        "Does it support two-stage cooling?",
        "stages supported",
        "Will it handle a multi-stage furnace?",
    ),
    (
        "Heat pumps are supported, including the O/B reversing valve and auxiliary heat.",
        "Does it work with a heat pump?",
        "Is auxiliary heat supported?",
        "heat pump support",
        "Can I wire the O/B terminal?",
    ),
    (
        "The Lumo Hearth can control one humidifier or dehumidifier through the ACC terminal.",
        "Can it control a humidifier?",
        "What is the ACC terminal for?",
        "humidifier control",
        "Does it support a whole-home dehumidifier?",
    ),
    (
        "Professional installation by a Vellmont Install Partner costs 119 dollars.",
        "Do you offer professional installation?",
        "How much does pro install cost?",
        "professional install price",
        "Can someone install the thermostat for me?",
    ),
    (
        "Book a Vellmont Install Partner in the app under Help, Book Installation.",
        "How do I schedule an installer?",
        "Where can I book professional installation?",
        "book installer",
        "What's the way to arrange an install appointment?",
    ),
    (
        "Mount the thermostat about 5 feet above the floor on an interior wall.",
        "How high should I mount the thermostat?",
        "Where on the wall should it go?",
        "mounting height",
        "Can I put it on an outside wall?",
    ),
    (
        "The trim plate covers marks up to 6 inches wide left by an old thermostat.",
        "What is the trim plate for?",
        "How do I hide marks from my old thermostat?",
        "trim plate size",
        "Will the trim plate cover old screw holes?",
    ),
    # --- Wi-Fi ---
    (
        "It connects to 2.4 GHz and 5 GHz Wi-Fi networks using WPA2 or WPA3.",
        "What Wi-Fi does the Lumo Hearth support?",
        "Does it work on 5 GHz Wi-Fi?",
        "wifi requirements",
        "Is WPA3 supported?",
    ),
    (
        "Enterprise networks and captive portal Wi-Fi, like hotels or dorms, are not supported.",
        "Can I connect to my school or dorm Wi-Fi?",
        "Does it work with captive portal networks?",
        "enterprise wifi",
        "Will it join a network with a login page?",
    ),
    (
        "Change Wi-Fi on the thermostat under Settings, Network, Choose Network.",
        "How do I change the Wi-Fi network?",
        "I got a new router, how do I reconnect?",
        "change wifi",
        "What's the way to switch the thermostat to another network?",
    ),
    # --- Temperature control features ---
    (
        "You can set temperatures from 45 to 90 degrees Fahrenheit.",
        "What temperature range can I set?",
        "What's the lowest temperature I can set?",
        "setpoint range",
        "Can I set it to 95 degrees?",
    ),
    (
        "The built-in sensor is accurate to within plus or minus 0.5 degrees Fahrenheit.",
        "How accurate is the temperature sensor?",
        "Is the thermostat reading precise?",
        "temperature accuracy",
        "How close is the displayed temperature to the real one?",
    ),
    (
        "The humidity sensor is accurate to within plus or minus 3 percent.",
        "Does it measure humidity?",
        "How accurate is the humidity reading?",
        "humidity sensor accuracy",
        "Can I see indoor humidity on the thermostat?",
    ),
    (
        "Each day's schedule can hold up to 12 temperature changes.",
        "How many schedule changes per day are allowed?",
        "Is there a limit on daily set points?",
        "schedule set point limit",
        "Can I schedule more than ten changes a day?",
    ),
    (
        "Create schedules in the app under Schedule, then tap the plus button on a day.",
        "How do I create a schedule?",
        "Where do I set up a weekly schedule?",
        "create schedule",
        "What's the way to program the thermostat for the week?",
    ),
    (
        "Long-press a day in the schedule view and tap Copy To to reuse it.",
        "Can I copy one day's schedule to another?",
        "How do I duplicate a schedule?",
        "copy schedule",
        "Is there a way to apply Monday's schedule to all weekdays?",
    ),
    (
        "Eco mode holds between 62 and 80 degrees Fahrenheit to save energy.",
        "What is Eco mode?",
        "What temperatures does Eco mode use?",
        "eco mode range",
        "How does Eco mode save energy?",
    ),
    (
        "Adjust Eco temperatures in the app under Settings, Eco Temperatures.",
        "Can I change the Eco mode temperatures?",
        "How do I customize Eco settings?",
        "eco temperature settings",
        "Where do I edit my Eco limits?",
    ),
    (
        "Away mode turns on when every household phone is more than half a mile away.",
        "How does Away mode work?",
        "Does the thermostat know when I leave home?",
        "geofencing",
        "What triggers automatic Away mode?",
    ),
    (
        "A built-in infrared motion sensor detects presence; there is no camera or microphone.",
        "Does the thermostat have a camera?",
        "Is there a microphone in the Lumo Hearth?",
        "presence detection",
        "How does it know someone is home?",
    ),
    (
        "Smart Preheat learns how long your home takes to warm up over about 7 days.",
        "What is Smart Preheat?",
        "How long does Smart Preheat take to learn?",
        "smart preheat learning",
        "Why does heating start before my scheduled time?",
    ),
    (
        "Vacation mode holds Eco temperatures between start and end dates you pick in the app.",
        "Is there a vacation mode?",
        "How do I set the thermostat for a trip?",
        "vacation mode",
        "Can I pause my schedule while I'm away for a week?",
    ),
    (
        "Turning the dial holds the new temperature until the next scheduled change.",
        "How long does a manual change last?",
        "What happens when I turn the dial?",
        "manual hold duration",
        "Will my schedule override a temperature I set by hand?",
    ),
    (
        "Press the dial and choose Permanent Hold to keep a temperature indefinitely.",
        "How do I keep a temperature indefinitely?",
        "Is there a permanent hold?",
        "permanent hold",
        "Can I stop the schedule from changing my setting?",
    ),
    (
        "Choose Fan in the app to run the fan alone for 15 minutes to 12 hours.",
        "Can I run just the fan?",
        "How do I turn on the fan without heating?",
        "fan only mode",
        "How long can the fan run by itself?",
    ),
    (
        "Fan Circulate runs the fan for 5 to 55 minutes each hour, as you choose.",
        "What is Fan Circulate?",
        "Can the fan run for part of every hour?",
        "fan circulate",
        "How do I circulate air between heating cycles?",
    ),
    (
        "Filter reminders appear every 90 days by default, adjustable under Settings, Equipment.",
        "How often does it remind me to change the filter?",
        "Can I adjust the filter reminder interval?",
        "filter reminder",
        "When will I get an air filter alert?",
    ),
    (
        "Lock the controls with a 4-digit PIN under Settings, Lock on the thermostat.",
        "Is there a child lock?",
        "How do I stop kids from changing the temperature?",
        "lock thermostat",
        "Can I PIN-protect the controls?",
    ),
    (
        "If you forget the lock PIN, remove the lock in the app under Settings, Lock.",
        "I forgot my thermostat PIN, what now?",
        "How do I unlock the thermostat without the PIN?",
        "forgot lock pin",
        "Can I reset the lock code from my phone?",
    ),
    (
        "Without Wi-Fi, it keeps running your last saved schedule and manual controls.",
        "Does the thermostat work without internet?",
        "What happens if my Wi-Fi goes down?",
        "offline behavior",
        "Will my schedule still run during an internet outage?",
    ),
    (
        "After a power outage it restarts and restores your settings within 2 minutes.",
        "What happens after a power outage?",
        "Will I lose settings if the power goes out?",
        "power outage recovery",
        "Do I need to reconfigure after a blackout?",
    ),
    (
        "Adjust screen brightness under Settings, Display, Brightness, or choose Auto.",
        "How do I dim the screen?",
        "Can I change the display brightness?",
        "screen brightness",
        "Is there an automatic brightness setting?",
    ),
    (
        "The display turns off after 30 seconds and wakes when someone comes within 6 feet.",
        "Why does the screen turn off?",
        "Does the display stay on all the time?",
        "screen timeout",
        "How does the screen wake up?",
    ),
    (
        "Hearth Plus energy reports arrive by email on the first day of each month.",
        "When do energy reports come?",
        "How often will I get an energy report?",
        "energy report schedule",
        "Are energy reports emailed?",
    ),
    (
        "Offset the displayed temperature by up to 5 degrees under Settings, Calibration.",
        "Can I calibrate the temperature reading?",
        "How do I add a temperature offset?",
        "temperature calibration",
        "Is there a way to adjust the reported temperature by a few degrees?",
    ),
    (
        "In Heat-Cool mode, the two set points must be at least 3 degrees Fahrenheit apart.",
        "What is the minimum gap in Heat-Cool mode?",
        "Why can't my heat and cool set points be closer?",
        "heat cool deadband",
        "How far apart do the auto mode temperatures need to be?",
    ),
    (
        "Compressor protection waits 5 minutes before restarting cooling after it stops.",
        "Why is the AC delayed after turning off?",
        "Does it have compressor protection?",
        "cooling restart delay",
        "How long before the air conditioner can turn back on?",
    ),
    # --- Firmware ---
    (
        "Firmware updates install automatically at about 3 am local time.",
        "How do firmware updates work?",
        "When does the thermostat update itself?",
        "automatic updates",
        "Do I need to install updates manually?",
    ),
    (
        "See the firmware version in the app under Settings, Device Info, Software.",
        "How do I check the firmware version?",
        "What software version am I running?",
        "firmware version",
        "Where is the thermostat's software info?",
    ),
    (
        "Start an update on the thermostat under Settings, Software, Check Now.",
        "Can I update the firmware now?",
        "How do I force a software update?",
        "manual update",
        "Is there a check for updates button?",
    ),
    # --- Accessories ---
    (
        "The Lumo Room Sensor costs 39 dollars, or 99 dollars for a 3-pack.",
        "How much is a Room Sensor?",
        "Do you sell sensors in a multi-pack?",
        "room sensor price",
        "What does an extra sensor cost?",
    ),
    (
        "Each Lumo Hearth supports up to 6 Room Sensors.",
        "How many room sensors can I add?",
        "Is there a limit on sensors per thermostat?",
        "max room sensors",
        "Can I use eight sensors with one thermostat?",
    ),
    (
        "Room Sensors use one CR2032 coin battery that lasts about 2 years.",
        "What battery does the Room Sensor use?",
        "How long do sensor batteries last?",
        "sensor battery",
        "Which coin cell goes in the room sensor?",
    ),
    (
        "Room Sensors work up to 50 feet from the thermostat indoors.",
        "What is the range of a Room Sensor?",
        "How far away can a sensor be placed?",
        "sensor range",
        "Will a sensor in the basement reach the thermostat?",
    ),
    (
        "Pull the battery tab, then tap Add Sensor in the app within 2 minutes.",
        "How do I add a Room Sensor?",
        "How do I pair a new sensor?",
        "add sensor",
        "What's the way to connect a sensor to my thermostat?",
    ),
    (
        "In the schedule, choose which sensors to average for each time of day.",
        "Can the thermostat use a bedroom sensor at night?",
        "How do I prioritize a room sensor?",
        "sensor priority",
        "Can I average multiple sensors?",
    ),
    (
        "A replacement Power Link adapter costs 19 dollars.",
        "How much is a replacement Power Link?",
        "Can I buy another Power Link adapter?",
        "power link price",
        "What does a spare Power Link cost?",
    ),
    (
        "Extra trim plates cost 15 dollars and come in all three finishes.",
        "Can I buy a spare trim plate?",
        "How much is a trim plate?",
        "trim plate price",
        "Do trim plates come in Brass?",
    ),
    # --- Integrations ---
    (
        "Enable the Vellmont Home skill in the Alexa app and sign in to link.",
        "Does it work with Alexa?",
        "How do I connect Lumo Hearth to Amazon Alexa?",
        "alexa setup",
        "Can I control the thermostat with an Echo?",
    ),
    (
        "In Google Home, tap Add, then Works with Google, and choose Vellmont Home.",
        "Does it work with Google Home?",
        "How do I link my thermostat to Google Assistant?",
        "google home setup",
        "Can I use Hey Google to change the temperature?",
    ),
    (
        "It supports Matter, so add it to Apple Home with the Matter code from the app.",
        "Does it work with Apple HomeKit?",
        "Is the Lumo Hearth Matter compatible?",
        "apple home setup",
        "Can I use Siri with the thermostat?",
    ),
    (
        "Find the Matter pairing code in the app under Settings, Integrations, Matter.",
        "Where is the Matter setup code?",
        "How do I get a Matter pairing code?",
        "matter code",
        "I lost the Matter code, where can I find it again?",
    ),
    (
        "SmartThings works through Matter; add it as a Matter device in the SmartThings app.",
        "Does it work with SmartThings?",
        "How do I add the thermostat to Samsung SmartThings?",
        "smartthings",
        "Is there a SmartThings integration?",
    ),
    (
        "IFTTT applets are supported on all plans through the Vellmont Home service.",
        "Does it support IFTTT?",
        "Can I make IFTTT applets with my thermostat?",
        "ifttt",
        "Do I need a paid plan for IFTTT?",
    ),
    (
        "Unlink an integration in the app under Settings, Integrations, then tap Remove.",
        "How do I disconnect Alexa?",
        "Can I remove a linked integration?",
        "unlink integration",
        "What's the way to revoke Google Home access?",
    ),
    (
        "Join utility rewards programs in the app under Energy, Rewards Programs.",
        "Can I enroll in my utility's rewards program?",
        "Does it support demand response?",
        "utility programs",
        "Where do I join an energy savings event program?",
    ),
    (
        "Check for local utility rebates on the Lumo Hearth in the app under Energy, Rebates.",
        "Is there a rebate for this thermostat?",
        "Can my utility give me money back for buying it?",
        "rebates",
        "How do I find local rebates?",
    ),
    # --- Error codes ---
    (
        "Error E1 means no power on the R wire; check the breaker and furnace switch.",
        "What does error E1 mean?",
        "My thermostat shows E1, what should I do?",
        "error code E1",
        "How do I fix an E1 error?",
    ),
    (
        "Error E2 means no C-wire power was detected; install the Power Link adapter.",
        "What does the E2 error mean?",
        "Why is my screen showing E2?",
        "E2 error code",
        "How can I clear error E2?",
    ),
    (
        "Error E3 means the Wi-Fi connection failed; check the password and your router.",
        "What is error E3?",
        "The thermostat says E3, how do I fix it?",
        "code E3 meaning",
        "Why did I get an E3 error during setup?",
    ),
    (
        "Error E4 means the temperature sensor failed; file a warranty claim.",
        "What does E4 mean on the Lumo Hearth?",
        "How do I resolve error E4?",
        "E4 sensor error",
        "Is error E4 covered by warranty?",
    ),
    (
        "Error E5 means no temperature change after 30 minutes of heating or cooling.",
        "What does error code E5 indicate?",
        "My display shows E5, what's wrong?",
        "E5 no temperature change",
        "Why am I getting E5 after heating for a while?",
    ),
    (
        "Error E6 means a firmware update failed; it retries automatically within 24 hours.",
        "What does error E6 mean?",
        "E6 after an update, what do I do?",
        "firmware error E6",
        "Will error E6 fix itself?",
    ),
    (
        "Error E7 means a Room Sensor is offline; replace its battery or move it closer.",
        "What is error E7?",
        "How do I fix an E7 code?",
        "E7 sensor offline",
        "Why does my thermostat show E7?",
    ),
    (
        "Error E8 means a wire is in the wrong terminal; recheck the wiring diagram.",
        "What does E8 mean?",
        "The screen reads E8 after install, what now?",
        "E8 wiring error",
        "How do I correct error E8?",
    ),
    (
        "Error E9 means the backup battery is low because the thermostat lacks steady power.",
        "What does error E9 mean?",
        "Why do I see E9 on my thermostat?",
        "E9 low battery",
        "How do I get rid of error E9?",
    ),
    # --- Light ring colours ---
    (
        "A solid orange ring means the system is heating.",
        "What does the orange light mean?",
        "Why is the ring glowing orange?",
        "orange LED",
        "Solid orange ring on my thermostat, is it heating?",
    ),
    (
        "A solid blue ring means the system is cooling.",
        "What does a blue ring mean?",
        "Why is my thermostat lit up blue?",
        "blue light meaning",
        "Does the blue ring mean it's cooling?",
    ),
    (
        "A solid green ring means Eco mode is active.",
        "What does the green light on the thermostat mean?",
        "Why is the ring green?",
        "green LED meaning",
        "Is green the Eco mode color?",
    ),
    (
        "A dim white ring means the thermostat is idle and nothing is running.",
        "What does a dim white ring mean?",
        "Why is the light ring white?",
        "white LED",
        "Is a white glow normal when nothing is running?",
    ),
    (
        "A pulsing purple ring means the thermostat is ready to pair with the app.",
        "What does pulsing purple mean?",
        "Why is the thermostat flashing purple?",
        "purple light",
        "Is the purple ring pairing mode?",
    ),
    (
        "A flashing red ring means there is an error; check the screen for the code.",
        "What does a flashing red light mean?",
        "Why is my thermostat blinking red?",
        "red LED",
        "The ring is red, is something wrong?",
    ),
    (
        "A pulsing yellow ring means a firmware update is installing; do not remove the unit.",
        "What does a yellow ring mean?",
        "Why is the light pulsing yellow?",
        "yellow light meaning",
        "Can I unplug it while the ring is yellow?",
    ),
    (
        "A solid teal ring means only the fan is running.",
        "What does a teal light mean?",
        "Why is the ring teal?",
        "teal LED",
        "Does teal mean only the fan is on?",
    ),
    (
        "A fast flashing white ring means a factory reset is in progress.",
        "What does fast flashing white mean?",
        "Why is the ring blinking white quickly?",
        "flashing white light",
        "Is a rapidly flashing white ring a reset?",
    ),
    (
        "Turn off the light ring under Settings, Display, Light Ring.",
        "How do I turn off the light ring?",
        "Can I disable the LED ring?",
        "light ring setting",
        "The ring is too bright at night, can I switch it off?",
    ),
    # --- Troubleshooting ---
    (
        "Restart by pressing and holding the dial for 10 seconds until the screen goes dark.",
        "How do I restart the thermostat?",
        "What's the way to reboot my Lumo Hearth?",
        "restart thermostat",
        "Can I power cycle it without the breaker?",
    ),
    (
        "Factory reset by holding the dial for 25 seconds, or under Settings, Reset.",
        "How do I factory reset the Lumo Hearth?",
        "What's the way to erase all settings?",
        "factory reset",
        "Can I wipe the thermostat back to defaults?",
    ),
    (
        "If the app shows Offline, restart your router, then restart the thermostat.",
        "Why does the app say my thermostat is offline?",
        "The app shows Offline, how do I fix it?",
        "thermostat offline in app",
        "What should I try when the device won't connect to the app?",
    ),
    (
        "A blank screen usually means no power; check the breaker and the furnace door switch.",
        "Why is the screen blank?",
        "My thermostat display is black, what's wrong?",
        "blank screen",
        "The thermostat won't turn on, what should I check?",
    ),
    (
        "For short cycling, set Cycle Rate to 3 per hour under Settings, Equipment.",
        "Why does my system turn on and off so often?",
        "How do I fix short cycling?",
        "short cycling",
        "Can I reduce how often the furnace cycles?",
    ),
    (
        "Readings run high when the unit sits in direct sunlight or near a lamp or vent.",
        "Why is the temperature reading higher than expected?",
        "Why does my thermostat say it's warmer than it is?",
        "reading too high",
        "Could sunlight affect the temperature reading?",
    ),
    (
        "If it won't heat, confirm Heat mode is on and the W1 wire is firmly seated.",
        "Why won't my heat turn on?",
        "The thermostat isn't heating, what should I check?",
        "no heat",
        "What do I do if the furnace doesn't start?",
    ),
    (
        "If the fan never stops, set Fan to Auto and check the G wire is not touching others.",
        "Why won't the fan stop running?",
        "My fan runs constantly, how do I fix it?",
        "fan always on",
        "What if the blower never shuts off?",
    ),
    (
        "If setup can't find the thermostat, allow Bluetooth and Location access for the app.",
        "Why can't the app find my thermostat during setup?",
        "Setup says no device found, what do I do?",
        "device not found during setup",
        "Which phone permissions does setup need?",
    ),
    (
        "A built-in rechargeable battery keeps settings and the clock during short power losses.",
        "Does the thermostat have a battery?",
        "What keeps the clock running during a short outage?",
        "internal battery",
        "Is there a backup battery inside?",
    ),
    (
        "A soft click when heating or cooling starts is the normal relay sound.",
        "Why does the thermostat click?",
        "Is a clicking sound normal?",
        "clicking noise",
        "What's that click when the heat comes on?",
    ),
    (
        "The clock sets itself from the internet using the time zone chosen in the app.",
        "How does the thermostat set the time?",
        "Why is the clock wrong?",
        "time and clock",
        "Do I need to set the clock manually?",
    ),
    # --- Accounts ---
    (
        "Create an account in the Vellmont Home app with your email address and a password.",
        "How do I create an account?",
        "What do I need to sign up?",
        "account sign up",
        "Can I register with just an email?",
    ),
    (
        "Passwords need at least 10 characters, including at least one number and one letter.",
        "What are the password requirements?",
        "How long does my password need to be?",
        "password rules",
        "Does my password need a number?",
    ),
    (
        "Tap Forgot Password on the sign-in screen; the reset link works for 60 minutes.",
        "How do I reset my password?",
        "I forgot my password, what do I do?",
        "password reset link",
        "How long is the reset link valid?",
    ),
    (
        "Turn on two-step verification under Settings, Account, Security, using an app or SMS.",
        "Can I turn on two-factor authentication?",
        "How do I enable two-step verification?",
        "2FA",
        "Does Vellmont support authenticator apps?",
    ),
    (
        "Change your email under Settings, Account, Email, then confirm the link we send.",
        "How do I change my account email?",
        "Can I update the email address on my account?",
        "change email",
        "What's the way to use a new email for login?",
    ),
    (
        "Invite up to 8 household members under Settings, Home, People.",
        "How do I share access with my family?",
        "How many people can control my thermostat?",
        "household members",
        "Can my partner use the app too?",
    ),
    (
        "Guest access can be granted for up to 14 days and expires automatically.",
        "Can I give a guest temporary access?",
        "How long does guest access last?",
        "guest access",
        "Is there a way to let a house sitter control the heat?",
    ),
    (
        "Remove a member under Settings, Home, People by tapping their name, then Remove.",
        "How do I remove someone from my home?",
        "Can I revoke a family member's access?",
        "remove household member",
        "What's the way to take a roommate off my account?",
    ),
    (
        "Delete your account under Settings, Account, Delete Account; data is gone within 30 days.",
        "How do I delete my account?",
        "Can I close my Vellmont account?",
        "delete account",
        "How long until my data is erased after deletion?",
    ),
    (
        "Before selling, tap Remove Device under Settings, Device Info, then factory reset it.",
        "How do I prepare the thermostat before selling it?",
        "I'm moving out, what should I do with the thermostat?",
        "transfer ownership",
        "Can I give my thermostat to someone else?",
    ),
    (
        "Sign out everywhere under Settings, Account, Security, Sign Out All Devices.",
        "How do I sign out of all devices?",
        "Someone else is logged in to my account, what do I do?",
        "sign out everywhere",
        "Can I log out of every phone at once?",
    ),
    # --- Privacy ---
    (
        "Vellmont Labs never sells your personal data to third parties.",
        "Do you sell my data?",
        "Does Vellmont share personal information with advertisers?",
        "data selling",
        "Is my personal data sold to third parties?",
    ),
    (
        "Account and device data is stored on servers in the United States and Canada.",
        "Where is my data stored?",
        "Which countries are your servers in?",
        "data location",
        "Is my data kept in Canada?",
    ),
    (
        "Request a data export under Settings, Privacy, Export Data; it is ready within 48 hours.",
        "How do I download my data?",
        "Can I get a copy of my data?",
        "data export",
        "How long does a data export take?",
    ),
    (
        "Data is encrypted in transit with TLS 1.3 and at rest with AES-256.",
        "Is my data encrypted?",
        "What encryption do you use?",
        "encryption",
        "Is data protected in transit?",
    ),
    (
        "Usage data is shared with a utility only if you join its rewards program.",
        "Do you share my data with my utility?",
        "Will my energy company see my usage?",
        "utility data sharing",
        "When is my data given to a power company?",
    ),
    (
        "Turn off app analytics under Settings, Privacy, Share Usage Data.",
        "How do I turn off usage analytics?",
        "Can I opt out of app tracking?",
        "usage data sharing",
        "Where is the analytics setting?",
    ),
    (
        "Read the privacy policy in the app under Help, Legal, Privacy Policy.",
        "Where can I read the privacy policy?",
        "How do I find your privacy terms?",
        "privacy policy",
        "Is the privacy policy in the app?",
    ),
    # --- Support ---
    (
        "Live chat is open 8 am to 8 pm Eastern, seven days a week.",
        "When is live chat available?",
        "What are your support hours?",
        "chat hours",
        "Can I chat with support on weekends?",
    ),
    (
        "Phone support is at 1-800-555-0142, weekdays 9 am to 6 pm Eastern.",
        "What is the support phone number?",
        "Can I call customer support?",
        "phone support",
        "What hours is phone support open?",
    ),
    (
        "Use the Contact Us form under Help in the app; email replies come within 1 business day.",
        "How do I email support?",
        "How fast does email support reply?",
        "email support",
        "Is there a contact form?",
    ),
    (
        "Vellmont recycles old thermostats, including mercury ones, with a free prepaid label.",
        "Can you recycle my old thermostat?",
        "How do I dispose of a mercury thermostat?",
        "thermostat recycling",
        "Do you take back old thermostats?",
    ),
]


def _norm(question: str) -> str:
    return " ".join(question.lower().split())


def validate(facts: list[tuple[str, str, str, str, str]]) -> None:
    """Assert every dataset constraint; raises AssertionError naming the first offender."""
    assert len(facts) >= MIN_FACTS, f"only {len(facts)} facts, need >= {MIN_FACTS}"
    seen_answers: set[str] = set()
    seen_questions: set[str] = set()
    for number, fact in enumerate(facts, start=1):
        assert len(fact) == 1 + PHRASINGS_PER_FACT, f"fact {number}: wrong tuple size"
        answer, *questions = fact
        where = f"fact {number} ({answer!r})"
        assert answer.isascii(), f"{where}: answer is not ASCII"
        assert answer == answer.strip() and "  " not in answer, f"{where}: stray whitespace"
        assert answer.endswith("."), f"{where}: answer must end with a period"
        words = len(answer.split())
        assert MIN_ANSWER_WORDS <= words <= MAX_ANSWER_WORDS, f"{where}: {words} words"
        assert answer.lower() not in seen_answers, f"{where}: duplicate answer"
        seen_answers.add(answer.lower())
        for question in questions:
            assert question, f"{where}: empty question"
            assert question.isascii(), f"{where}: question not ASCII: {question!r}"
            assert question == question.strip() and "  " not in question, (
                f"{where}: stray whitespace in {question!r}"
            )
            key = _norm(question)
            assert key not in seen_questions, f"{where}: duplicate question {question!r}"
            seen_questions.add(key)


def build_rows(facts: list[tuple[str, str, str, str, str]] = FACTS) -> list[dict[str, str]]:
    """Rows sorted by fact_id, phrasings in written order; phrasing i % 4 of fact i is heldout."""
    validate(facts)
    rows: list[dict[str, str]] = []
    for index, (answer, *questions) in enumerate(facts):
        heldout = index % PHRASINGS_PER_FACT
        for position, question in enumerate(questions):
            rows.append(
                {
                    "question": question,
                    "answer": answer,
                    "fact_id": f"f{index + 1:03d}",
                    "split": "heldout" if position == heldout else "train",
                }
            )
    return rows


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)


def write(output: Path = DEFAULT_OUTPUT) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(render(build_rows()))
    return output


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python data/build_support_qa.py [OUTPUT_PATH]")
        return 0 if args and args[0] in ("-h", "--help") else 2
    output = write(Path(args[0]) if args else DEFAULT_OUTPUT)
    rows = build_rows()
    train = sum(row["split"] == "train" for row in rows)
    print(
        f"wrote {output}: {len(FACTS)} facts, {len(rows)} pairs "
        f"({train} train, {len(rows) - train} heldout)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
